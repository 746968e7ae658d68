"""Feedback belongs to whoever made the request: tokens, owners, the private log, files of
feedback, and the forged-feedback attack on an A/B test (issue #15)."""

from __future__ import annotations

import hmac
import json
import math
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from apps.core.errors import InvalidInput
from apps.endpoints import policy
from apps.endpoints.experiments import ab_testing
from apps.endpoints.models import ABTest, FeedbackRevision, MLAlgorithm, MLRequest
from apps.endpoints.serving import feedback
from apps.endpoints.tests.factories import operator
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD, adult_frame

pytestmark = pytest.mark.django_db
PREDICT = "/api/v1/income_classifier/predict"


def predict(client: APIClient, record: dict[str, Any] = SAMPLE_RECORD, **extra: Any) -> Any:
    response = client.post(
        PREDICT + extra.pop("query", ""),
        data=json.dumps(record),
        content_type="application/json",
        **extra,
    )
    assert response.status_code == 200, response.content
    return response.json()


def give(client: APIClient, request_id: int, method: str = "put", **body: Any) -> Any:
    return getattr(client, method)(f"/api/v1/mlrequests/{request_id}", body, format="json")


def other_label(label: str) -> str:
    return ">50K" if label == "<=50K" else "<=50K"


def logged_in(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


# -- tokens ------------------------------------------------------------------------------


def test_every_answer_carries_a_token_that_gives_feedback_and_records_the_audit(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    served = predict(api)
    token = served["feedback_token"]
    assert len(token) == feedback.TOKEN_LENGTH and token == feedback.token_for(served["request_id"])
    # Only the feedback can change: other fields of the body are ignored.
    response = give(
        api, served["request_id"], feedback=">50K.", feedback_token=token, response="hacked"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    # adult.test writes labels with a full stop: it is the class ">50K"
    assert body["feedback"] == ">50K" and body["feedback_via"] == "token"
    assert body["feedback_by"] == "anonymous:127.0.0.1" and body["feedback_at"]
    assert set(body) == {"id", "feedback", "feedback_at", "feedback_by", "feedback_via"}
    row = MLRequest.objects.get(pk=served["request_id"])
    assert (row.feedback, row.feedback_via, row.user_id) == (">50K", "token", None)
    assert row.response == served["label"]


@pytest.mark.parametrize(
    "case", ["missing", "empty", "wrong", "another request's", "tampered", "not hex", "non-ascii"]
)
def test_feedback_without_the_requests_own_token_is_a_403_that_writes_and_shows_nothing(
    api: APIClient, demo_registry: MLRegistry, case: str
) -> None:
    served, other = predict(api), predict(api)
    token = served["feedback_token"]
    tokens = {
        "missing": None,
        "empty": "",
        "wrong": "0" * feedback.TOKEN_LENGTH,
        "another request's": other["feedback_token"],
        "tampered": token[:-1] + ("0" if token[-1] != "0" else "1"),
        "not hex": "z" * feedback.TOKEN_LENGTH,
        "non-ascii": "é" * feedback.TOKEN_LENGTH,
    }
    body = {"feedback": ">50K"}
    if tokens[case] is not None:
        body["feedback_token"] = tokens[case]
    for method in ("put", "patch"):
        response = give(api, served["request_id"], method, **body)
        assert response.status_code == 403, response.content
        assert response.json()["error"]["code"] == "permission_denied"
        assert "input_data" not in response.content.decode()
        assert str(SAMPLE_RECORD["fnlwgt"]) not in response.content.decode()
    assert MLRequest.objects.get(pk=served["request_id"]).feedback is None
    assert not FeedbackRevision.objects.exists()


def test_a_patch_with_an_empty_body_is_refused_and_shows_nothing(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    # The attack that read the log: PATCH {} answered 200 with input_data.
    served = predict(api)
    for client in (api, logged_in(operator("nosy", permissions=[]))):
        response = client.patch(f"/api/v1/mlrequests/{served['request_id']}", {}, format="json")
        assert response.status_code == 403, response.content
        assert "fnlwgt" not in response.content.decode()
    # With the token, an empty PATCH still has no feedback to record: 400, nothing shown.
    response = give(api, served["request_id"], "patch", feedback_token=served["feedback_token"])
    assert response.status_code == 400 and "fnlwgt" not in response.content.decode()


def test_an_unknown_request_is_a_403_without_a_valid_token_and_a_404_with_one(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    # Without its token, whether an id exists is not told.
    assert give(api, 999_999, feedback=">50K", feedback_token="0" * 32).status_code == 403
    token = feedback.token_for(999_999)
    response = give(api, 999_999, feedback=">50K", feedback_token=token)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert give(api, "abc", feedback=">50K", feedback_token=token).status_code == 404  # type: ignore[arg-type]


def test_a_wrong_token_is_compared_in_constant_time_against_every_key(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    # The timing half of "a wrong token takes as long as a right one": the comparison is
    # hmac.compare_digest (constant time for equal lengths), and every key is tried whether
    # an earlier one matched or not, so right and wrong tokens do the same work.
    settings.SECRET_KEY_FALLBACKS = ["old-key-1", "old-key-2"]
    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(a)
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", spy)
    right = feedback.token_for(7)
    assert feedback.token_matches(7, right) is True
    assert len(compared) == 3
    compared.clear()
    assert feedback.token_matches(7, "f" * 32) is False
    assert len(compared) == 3


def test_tokens_made_under_a_rotated_key_stay_valid_while_it_is_a_fallback(
    settings: Any,
) -> None:
    settings.SECRET_KEY = "old-key"
    old = feedback.token_for(42)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "new-key", ["old-key"]
    assert feedback.token_for(42) != old
    assert feedback.token_matches(42, old) and feedback.token_matches(42, feedback.token_for(42))
    settings.SECRET_KEY_FALLBACKS = []
    assert not feedback.token_matches(42, old)


# -- values ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["maybe", "", "   ", ">50", 1, True, [">50K"], {"a": 1}])
def test_feedback_must_be_one_of_the_models_classes(
    api: APIClient, demo_registry: MLRegistry, value: Any
) -> None:
    served = predict(api)
    response = give(
        api, served["request_id"], feedback=value, feedback_token=served["feedback_token"]
    )
    assert response.status_code == 400, response.content
    assert "feedback" in response.json()["error"]["details"]
    assert MLRequest.objects.get(pk=served["request_id"]).feedback is None


def test_a_nul_character_is_never_feedback() -> None:
    for target in (feedback.Target("classification", ()), feedback.Target("regression", ())):
        with pytest.raises(InvalidInput, match="NUL"):
            feedback.check_value(target, "1\x00")


def test_a_regressor_takes_a_finite_number() -> None:
    target = feedback.Target(task="regression", classes=())
    assert feedback.check_value(target, " 12.5 ") == "12.5"
    assert float(feedback.check_value(target, "1e3")) == 1000.0
    for bad in ("nan", "inf", "-Infinity", "twelve", "", None, [1]):
        with pytest.raises(InvalidInput):
            feedback.check_value(target, bad)
    assert math.isfinite(float(feedback.check_value(target, 3)))


def test_an_overwrite_keeps_the_previous_value_with_its_audit(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    served = predict(api)
    token = served["feedback_token"]
    assert give(api, served["request_id"], feedback=">50K", feedback_token=token).status_code == 200
    first = MLRequest.objects.get(pk=served["request_id"])
    # the same value again changes nothing, not even the audit
    assert give(api, served["request_id"], feedback=">50K", feedback_token=token).status_code == 200
    assert not FeedbackRevision.objects.exists()
    staff = logged_in(operator())
    response = give(staff, served["request_id"], feedback="<=50K")  # operators need no token
    assert response.status_code == 200, response.content
    assert response.json()["feedback_by"] == "user:operator"
    assert response.json()["feedback_via"] == "staff"
    [revision] = FeedbackRevision.objects.all()
    assert (revision.feedback, revision.given_by, revision.given_via) == (
        ">50K",
        "anonymous:127.0.0.1",
        "token",
    )
    assert revision.given_at == first.feedback_at and revision.request_id == first.pk


# -- who ---------------------------------------------------------------------------------


def test_with_token_access_only_the_user_who_made_the_request_gives_its_feedback(
    demo_registry: MLRegistry, settings: Any, django_user_model: Any
) -> None:
    settings.PREDICT_ACCESS = "token"
    alice_user = django_user_model.objects.create_user("alice")
    alice = logged_in(alice_user)
    bob = logged_in(django_user_model.objects.create_user("bob"))
    served = predict(alice)
    assert MLRequest.objects.get(pk=served["request_id"]).user_id == alice_user.pk
    stolen = give(
        bob, served["request_id"], feedback=">50K", feedback_token=served["feedback_token"]
    )
    assert stolen.status_code == 403 and "another user" in stolen.json()["error"]["message"]
    assert give(APIClient(), served["request_id"], feedback=">50K").status_code == 401
    own = give(
        alice, served["request_id"], feedback=">50K", feedback_token=served["feedback_token"]
    )
    assert own.status_code == 200 and own.json()["feedback_by"] == "user:alice"


def test_feedback_access_authenticated_and_staff(
    api: APIClient, demo_registry: MLRegistry, settings: Any, django_user_model: Any
) -> None:
    served = predict(api)
    body = {"feedback": ">50K", "feedback_token": served["feedback_token"]}
    user = logged_in(django_user_model.objects.create_user("carol"))
    settings.FEEDBACK_ACCESS = "authenticated"
    assert give(api, served["request_id"], **body).status_code == 401
    assert give(user, served["request_id"], **body).status_code == 200
    settings.FEEDBACK_ACCESS = "staff"
    body["feedback"] = "<=50K"
    assert give(user, served["request_id"], **body).status_code == 403
    staff_without_permission = logged_in(operator("viewer", permissions=["view_mlrequest"]))
    assert give(staff_without_permission, served["request_id"], **body).status_code == 403
    assert give(logged_in(operator()), served["request_id"], **body).status_code == 200
    assert MLRequest.objects.get(pk=served["request_id"]).feedback == "<=50K"


def test_a_nonsense_feedback_access_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    import runpy

    from django.conf import settings as django_settings
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.setenv("SECRET_KEY", "x")
    monkeypatch.setenv("FEEDBACK_ACCESS", "anyone")
    with pytest.raises(ImproperlyConfigured, match="FEEDBACK_ACCESS"):
        runpy.run_path(str(django_settings.BASE_DIR / "server" / "settings.py"))


# -- the log is private ------------------------------------------------------------------


def test_the_log_shows_staff_everything_users_their_own_and_anonymous_nothing(
    demo_registry: MLRegistry, settings: Any, django_user_model: Any
) -> None:
    settings.PREDICT_ACCESS = "token"  # so that requests know their user
    alice_user = django_user_model.objects.create_user("alice")
    alice, bob = logged_in(alice_user), logged_in(django_user_model.objects.create_user("bob"))
    mine = predict(alice)["request_id"]
    theirs = predict(bob)["request_id"]
    listed = alice.get("/api/v1/mlrequests").json()["results"]
    assert [r["id"] for r in listed] == [mine] and listed[0]["user"] == "alice"
    assert alice.get(f"/api/v1/mlrequests/{mine}").status_code == 200
    assert alice.get(f"/api/v1/mlrequests/{theirs}").status_code == 404
    staff = logged_in(operator())
    assert {r["id"] for r in staff.get("/api/v1/mlrequests").json()["results"]} == {mine, theirs}
    # is_staff without the view permission reads only its own, as the admin would show none
    plain_staff = logged_in(operator("plain", permissions=[]))
    assert plain_staff.get("/api/v1/mlrequests").json()["results"] == []
    settings.PREDICT_ACCESS = "open"
    assert APIClient().get("/api/v1/mlrequests").status_code == 401
    assert APIClient().get(f"/api/v1/mlrequests/{mine}").status_code == 401


def test_the_browsable_api_shows_a_token_holder_the_feedback_and_not_the_request(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    served = predict(api)
    response = api.patch(
        f"/api/v1/mlrequests/{served['request_id']}",
        {"feedback": ">50K", "feedback_token": served["feedback_token"]},
        format="json",
        HTTP_ACCEPT="text/html",
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "&gt;50K" in page and "Craft-repair" not in page and "fnlwgt" not in page
    page = api.get(f"/api/v1/mlrequests/{served['request_id']}", HTTP_ACCEPT="text/html")
    assert page.status_code == 401 and "Craft-repair" not in page.content.decode()


# -- management writes -------------------------------------------------------------------


WRITES = [
    ("change a status", "/api/v1/mlalgorithmstatuses", "add_mlalgorithmstatus"),
    ("create an A/B test", "/api/v1/abtests", "add_abtest"),
    ("stop an A/B test", "/api/v1/stop_ab_test/{abtest}", "change_abtest"),
]


@pytest.mark.parametrize(("name", "path", "permission"), WRITES, ids=[w[0] for w in WRITES])
def test_each_management_write_needs_its_model_permission(
    demo_registry: MLRegistry, name: str, path: str, permission: str
) -> None:
    rf = MLAlgorithm.objects.get(name="random forest")
    et = MLAlgorithm.objects.get(name="extra trees")
    abtest = 0
    if name == "stop an A/B test":
        abtest = ab_testing.create(
            title="t", created_by="t", parent_mlalgorithm_1=rf, parent_mlalgorithm_2=et
        ).pk
    bodies = {
        "change a status": {"status": "staging", "parent_mlalgorithm": rf.pk},
        "create an A/B test": {
            "title": "t",
            "parent_mlalgorithm_1": rf.pk,
            "parent_mlalgorithm_2": et.pk,
        },
        "stop an A/B test": {"force": True},
    }
    url = path.format(abtest=abtest)
    others = [p for _, _, p in WRITES if p != permission]
    refused = logged_in(operator("others", permissions=others)).post(
        url, bodies[name], format="json"
    )
    assert refused.status_code == 403
    assert f"endpoints.{permission}" in refused.json()["error"]["message"]
    allowed = logged_in(operator("holder", permissions=[permission]))
    response = allowed.post(url, bodies[name], format="json")
    assert response.status_code in (200, 201), response.content


def test_created_by_and_stopped_by_come_from_the_login_not_the_body(
    staff_api: APIClient, demo_registry: MLRegistry
) -> None:
    rf = MLAlgorithm.objects.get(name="random forest")
    et = MLAlgorithm.objects.get(name="extra trees")
    status = staff_api.post(
        "/api/v1/mlalgorithmstatuses",
        {"status": "staging", "parent_mlalgorithm": rf.pk, "created_by": "ceo"},
        format="json",
    )
    assert status.status_code == 201 and status.json()["created_by"] == "operator"
    test = staff_api.post(
        "/api/v1/abtests",
        {
            "title": "t",
            "parent_mlalgorithm_1": rf.pk,
            "parent_mlalgorithm_2": et.pk,
            "created_by": "ceo",
        },
        format="json",
    )
    assert test.status_code == 201 and test.json()["created_by"] == "operator"
    stopped = staff_api.post(
        f"/api/v1/stop_ab_test/{test.json()['id']}",
        {"force": True, "stopped_by": "ceo"},
        format="json",
    )
    assert stopped.json()["stopped_by"] == "operator"
    assert ABTest.objects.get().created_by == "operator"


# -- the attack, as a regression test ----------------------------------------------------


def adult_records(n: int) -> list[tuple[dict[str, Any], str]]:
    """The first ``n`` rows of adult.test as (record, true label); missing values null."""
    frame = adult_frame("adult.test").head(n)
    records = json.loads(frame.drop(columns="income").to_json(orient="records"))
    return list(zip(records, frame["income"].tolist(), strict=True))


def test_forged_feedback_cannot_decide_an_ab_test(
    api: APIClient, staff_api: APIClient, demo_registry: MLRegistry
) -> None:
    rf = MLAlgorithm.objects.get(name="random forest")
    et = MLAlgorithm.objects.get(name="extra trees")
    created = staff_api.post(
        "/api/v1/abtests",
        {
            "title": "rf vs et",
            "parent_mlalgorithm_1": rf.pk,
            "parent_mlalgorithm_2": et.pk,
            "require_significance": True,
        },
        format="json",
    )
    abtest = ABTest.objects.get(pk=created.json()["id"])
    # Real traffic from clients who send the true label back with their token.
    for i, (record, truth) in enumerate(adult_records(120)):
        served = predict(api, record, query="?status=ab_testing", HTTP_X_ASSIGNMENT_KEY=f"c{i}")
        body = {"feedback": truth, "feedback_token": served["feedback_token"]}
        assert give(api, served["request_id"], **body).status_code == 200
    honest = ab_testing.evaluate(abtest)
    # Decided as stop decides, by the test's mode (sequential by default).
    honest_outcome, _ = ab_testing.decide({**honest})
    # What the attacker wants is not the truth: the arm that did not honestly win. (Which
    # one did depends on the split, a hash of the test's id: on PostgreSQL, on the order
    # the tests ran in.)
    wanted = rf if honest_outcome == "arm_2_promoted" else et
    # The attacker: anonymous, with a prediction (and a valid token) of its own, walks the
    # ids and writes feedback that makes the wanted arm right and the other wrong.
    attacker = APIClient(REMOTE_ADDR="203.0.113.9")
    own = predict(attacker, query="?status=ab_testing")
    honest_rows = MLRequest.objects.filter(ab_test=abtest).exclude(pk=own["request_id"])
    before = dict(MLRequest.objects.values_list("id", "feedback"))
    tries = []
    for row in honest_rows.values("id", "response", "parent_mlalgorithm"):
        forged = (
            row["response"]
            if row["parent_mlalgorithm"] == wanted.pk
            else other_label(row["response"])
        )
        for token in (None, own["feedback_token"], feedback.token_for(row["id"] + 1)):
            body = {"feedback": forged, **({"feedback_token": token} if token else {})}
            tries.append(give(attacker, row["id"], "patch", **body).status_code)
    assert set(tries) == {403}
    bulk = "request_id,feedback_token,feedback\n" + "".join(
        f"{pk},{own['feedback_token']},>50K\n" for pk in before if pk != own["request_id"]
    )
    answer = attacker.post("/api/v1/feedback", {"file": SimpleUploadedFile("f.csv", bulk.encode())})
    assert answer.json()["applied"] == 0
    assert dict(MLRequest.objects.values_list("id", "feedback")) == before
    stopped = staff_api.post(f"/api/v1/stop_ab_test/{abtest.pk}", {}, format="json").json()
    assert stopped["summary_json"]["outcome"] == honest_outcome
    assert [a["accuracy"] for a in stopped["summary_json"]["arms"]] == [
        a["accuracy"] for a in honest["arms"]
    ]


# -- the admin ---------------------------------------------------------------------------


def test_feedback_changed_in_the_admin_is_checked_and_audited(
    client: Client, api: APIClient, demo_registry: MLRegistry
) -> None:
    served = predict(api)
    client.force_login(operator())
    url = f"/admin/endpoints/mlrequest/{served['request_id']}/change/"
    page = client.post(
        url, {"feedback": "nonsense", "revisions-TOTAL_FORMS": "0", "revisions-INITIAL_FORMS": "0"}
    )
    assert page.status_code == 200 and "not a class of this model" in page.content.decode()
    assert MLRequest.objects.get(pk=served["request_id"]).feedback is None
    done = client.post(
        url, {"feedback": ">50K", "revisions-TOTAL_FORMS": "0", "revisions-INITIAL_FORMS": "0"}
    )
    assert done.status_code == 302, done.content[:2000]
    row = MLRequest.objects.get(pk=served["request_id"])
    assert (row.feedback, row.feedback_by, row.feedback_via) == (">50K", "user:operator", "staff")


# -- a file of feedback ------------------------------------------------------------------


def send_file(client: APIClient, text: str | bytes, query: str = "") -> Any:
    data = text.encode() if isinstance(text, str) else text
    return client.post(f"/api/v1/feedback{query}", {"file": SimpleUploadedFile("f.csv", data)})


def test_a_file_of_feedback_is_applied_in_one_go(api: APIClient, demo_registry: MLRegistry) -> None:
    served = [predict(api) for _ in range(3)]
    text = "request_id,feedback_token,feedback\n" + "".join(
        f"{s['request_id']},{s['feedback_token']},{label}\n"
        for s, label in zip(served, [">50K", "<=50K", ">50K."], strict=True)
    )
    response = send_file(api, text)
    assert response.status_code == 200, response.content
    assert response.json() == {
        "applied": 3,
        "changed": 3,
        "refused_count": 0,
        "refused": [],
        "ignored_columns": [],
    }
    rows = MLRequest.objects.order_by("id")
    assert [r.feedback for r in rows] == [">50K", "<=50K", ">50K"]
    assert {(r.feedback_by, r.feedback_via) for r in rows} == {("anonymous:127.0.0.1", "token")}


def mixed_file(api: APIClient) -> tuple[str, list[dict[str, Any]]]:
    served = [predict(api) for _ in range(3)]
    good, other, third = served
    text = (
        "feedback,request_id,note,feedback_token\n"  # any column order; extra columns ignored
        f">50K,{good['request_id']},fine,{good['feedback_token']}\n"
        f">50K,{other['request_id']},wrong token,{third['feedback_token']}\n"
        f"perhaps,{third['request_id']},not a class,{third['feedback_token']}\n"
        f">50K,{good['request_id']},again,{good['feedback_token']}\n"
        f">50K,12abc,not a number,{good['feedback_token']}\n"
        f">50K,999999,unknown,{feedback.token_for(999_999)}\n"
    )
    return text, served


def test_a_mixed_file_applies_the_good_rows_and_says_why_each_other_was_refused(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    text, served = mixed_file(api)
    response = send_file(api, text)
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["applied"], body["changed"], body["refused_count"]) == (1, 1, 5)
    assert body["ignored_columns"] == ["note"]
    reasons = {r["line"]: r["reason"] for r in body["refused"]}
    assert reasons[3] == policy.WRONG_TOKEN
    assert "not a class of this model" in reasons[4]
    assert "appears earlier in the file (line 2)" in reasons[5]
    assert reasons[6] == "request_id must be a whole number."
    assert reasons[7] == "No logged request 999999."
    assert [r["request_id"] for r in body["refused"]][:2] == [
        str(served[1]["request_id"]),
        str(served[2]["request_id"]),
    ]
    feedbacks = dict(MLRequest.objects.values_list("id", "feedback"))
    assert feedbacks == {
        served[0]["request_id"]: ">50K",
        **{s["request_id"]: None for s in served[1:]},
    }


@pytest.mark.parametrize("where", ["query", "form"])
def test_an_atomic_file_with_one_bad_row_applies_nothing(
    api: APIClient, demo_registry: MLRegistry, where: str
) -> None:
    text, _ = mixed_file(api)
    if where == "query":
        response = send_file(api, text, "?atomic=true")
    else:
        upload = SimpleUploadedFile("f.csv", text.encode())
        response = api.post("/api/v1/feedback", {"file": upload, "atomic": "true"})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert "5 of 6 rows were refused, so nothing was applied" in error["message"]
    assert len(error["details"]["refused"]) == 5
    assert not MLRequest.objects.filter(feedback__isnull=False).exists()


def test_an_atomic_file_of_good_rows_is_applied(api: APIClient, demo_registry: MLRegistry) -> None:
    served = predict(api)
    row = f"{served['request_id']},{served['feedback_token']},>50K"
    text = f"request_id,feedback_token,feedback\n{row}\n"
    assert send_file(api, text, "?atomic=true").json()["applied"] == 1
    assert MLRequest.objects.get().feedback == ">50K"


def test_an_operator_sends_a_file_without_tokens(api: APIClient, demo_registry: MLRegistry) -> None:
    ids = [predict(api)["request_id"] for _ in range(2)]
    text = "request_id,feedback\n" + "".join(f"{pk},<=50K\n" for pk in ids)
    assert send_file(api, text).json()["refused_count"] == 2  # anonymous: tokens needed
    response = send_file(logged_in(operator()), text)
    assert response.json()["applied"] == 2
    assert set(MLRequest.objects.values_list("feedback_via", flat=True)) == {"staff"}


@pytest.mark.parametrize(
    ("text", "status", "message"),
    [
        (b"", 400, "empty"),
        (b"request_id,feedback_token,feedback\n", 400, "no rows"),
        (b"id,feedback\n1,>50K\n", 400, "Missing columns: request_id"),
        (b"request_id,feedback,feedback\n1,a,b\n", 400, "more than once"),
        (b"request_id,feedback_token,feedback\n1,2\n", 400, "Line 2 has 2 fields"),
        (b"request_id,feedback_token,feedback\n1,\xff\xfe,>50K\n", 400, "not UTF-8"),
        (b'request_id,feedback_token,feedback\n1,"a\nb,>50K\n', 400, "not valid CSV"),
    ],
    ids=["empty", "header only", "no id column", "duplicate column", "ragged", "binary", "quote"],
)
def test_a_bad_feedback_file_is_a_clear_4xx(
    api: APIClient, demo_registry: MLRegistry, text: bytes, status: int, message: str
) -> None:
    response = send_file(api, text)
    assert response.status_code == status, response.content
    assert message in response.json()["error"]["message"]


def test_a_feedback_file_over_the_row_limit_is_a_413_and_applies_nothing(
    api: APIClient, demo_registry: MLRegistry, settings: Any
) -> None:
    served = [predict(api) for _ in range(3)]
    settings.BATCH_MAX_ROWS = 2
    text = "request_id,feedback_token,feedback\n" + "".join(
        f"{s['request_id']},{s['feedback_token']},>50K\n" for s in served
    )
    response = send_file(api, text)
    assert response.status_code == 413, response.content
    assert not MLRequest.objects.filter(feedback__isnull=False).exists()


def test_a_feedback_file_past_the_column_limit_is_a_413(
    api: APIClient, demo_registry: MLRegistry, settings: Any
) -> None:
    served = predict(api)
    settings.BATCH_MAX_COLUMNS = 10
    extra = [f"x{i}" for i in range(8)]
    text = ",".join(["request_id", "feedback_token", "feedback", *extra]) + "\n"
    text += f"{served['request_id']},{served['feedback_token']},>50K," + ",".join("0" * 8)
    response = send_file(api, text)
    assert response.status_code == 413, response.content
    assert "more than 10 columns" in response.json()["error"]["message"]
    assert not MLRequest.objects.filter(feedback__isnull=False).exists()
    settings.BATCH_MAX_COLUMNS = 11
    assert send_file(api, text).status_code == 200


def test_behind_a_proxy_the_audit_names_the_client_not_the_proxy(
    api: APIClient, demo_registry: MLRegistry, settings: Any
) -> None:
    """Regression: feedback_by used REMOTE_ADDR, so behind nginx (NUM_PROXIES=1) every
    anonymous client was "anonymous:127.0.0.1", and the A/B summary's count of distinct
    clients giving feedback was 1."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    served = predict(api)
    response = api.put(
        f"/api/v1/mlrequests/{served['request_id']}",
        {"feedback": ">50K", "feedback_token": served["feedback_token"]},
        format="json",
        HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.9",  # the first is the client's own claim
    )
    assert response.status_code == 200, response.content
    assert response.json()["feedback_by"] == "anonymous:203.0.113.9"
