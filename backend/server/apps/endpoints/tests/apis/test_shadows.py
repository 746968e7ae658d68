"""Shadows over HTTP: a candidate scores a copy of production's single predictions off the
request path, its answers are kept beside production's, feedback scores both, and the
comparison is paired; a shadow never answers a client, never delays an answer, and ends
once. The statistics themselves: tests/services/test_paired.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from django.db import connection, transaction
from django.test import Client
from rest_framework.test import APIClient
from scipy import stats

from apps.core.errors import Conflict, ShadowEnded
from apps.endpoints import policy
from apps.endpoints.experiments import evaluation
from apps.endpoints.models import MLAlgorithm, MLRequest, Shadow, ShadowAnswer
from apps.endpoints.serving import feedback
from apps.endpoints.shadows import copying, services
from apps.endpoints.tests.apis.test_feedback import adult_records
from apps.endpoints.tests.factories import algorithm, operator
from apps.ml import registry as ml_registry
from apps.ml.registry import MLRegistry
from apps.ml.tests import models

# The shadow's writer is another thread with its own connection: it sees committed rows.
pytestmark = pytest.mark.django_db(transaction=True)
PREDICT = "/api/v1/income_classifier/predict"
Pair = tuple[MLAlgorithm, MLAlgorithm]


@pytest.fixture(autouse=True)
def fresh_worker() -> Iterator[None]:
    """Each test's copies are written within it, by a worker made with its settings."""
    copying.reset()
    yield
    copying.reset()


@pytest.fixture
def pair(demo_registry: MLRegistry) -> Pair:
    """Production (the random forest) and the candidate (extra trees, in testing)."""
    return MLAlgorithm.objects.get(name="random forest"), MLAlgorithm.objects.get(
        name="extra trees"
    )


def start(staff_api: APIClient, candidate: MLAlgorithm, **extra: Any) -> Any:
    return staff_api.post("/api/v1/shadows", {"candidate": candidate.pk, **extra}, format="json")


def predict(api: APIClient, record: dict[str, Any], query: str = "") -> Any:
    return api.post(PREDICT + query, data=json.dumps(record), content_type="application/json")


def status(algorithm: MLAlgorithm) -> str:
    return str(algorithm.statuses.get(active=True).status)


def give(api: APIClient, served: dict[str, Any], value: str) -> None:
    answer = api.put(
        f"/api/v1/mlrequests/{served['request_id']}",
        {"feedback": value, "feedback_token": served["feedback_token"]},
        format="json",
    )
    assert answer.status_code == 200, answer.content


def labelled(shadow: Shadow) -> list[tuple[float, float]]:
    """(x_production, x_shadow), 1.0 right or 0.0 wrong, of each pair with feedback: a scan
    of the log."""
    pairs = []
    for mine, production, truth in ShadowAnswer.objects.filter(
        shadow=shadow, request__feedback__isnull=False
    ).values_list("response", "request__response", "request__feedback"):
        assert truth is not None
        pairs.append(
            (
                evaluation.observation(production, truth, regression=False),
                evaluation.observation(mine, truth, regression=False),
            )
        )
    return pairs


def scanned(shadow: Shadow) -> dict[str, float]:
    """The paired counters as a scan of the log computes them."""
    sums = dict.fromkeys(("pairs", "sum_d", "sum_p", "sum_s", "b", "c"), 0.0)
    for x_p, x_s in labelled(shadow):
        sums["pairs"] += 1
        sums["sum_d"] += x_s - x_p
        sums["sum_p"] += x_p
        sums["sum_s"] += x_s
        sums["b"] += x_p > x_s
        sums["c"] += x_s > x_p
    return sums


def counters(shadow: Shadow) -> dict[str, float]:
    shadow.refresh_from_db()
    return {
        "pairs": shadow.pairs,
        "sum_d": shadow.sum_d,
        "sum_p": shadow.sum_p,
        "sum_s": shadow.sum_s,
        "b": shadow.only_production_right,
        "c": shadow.only_shadow_right,
    }


class Gate:
    """Makes a runtime's model block until released, or raise: the shadow's model, in the
    tests that show it never touches the client's answer."""

    def __init__(self, runtime: Any, monkeypatch: pytest.MonkeyPatch, *, fail: bool = False):
        self.entered, self.released = threading.Event(), threading.Event()
        real = runtime.predict_encoded

        def blocked(encoded: Any) -> Any:
            self.entered.set()
            assert self.released.wait(30), "the test never released the shadow"
            if fail:
                raise RuntimeError("the shadow's model broke")
            return real(encoded)

        monkeypatch.setattr(runtime, "predict_encoded", blocked)


# -- the comparison ------------------------------------------------------------------------


def test_a_shadow_scores_copies_beside_production_and_feedback_scores_both(
    api: APIClient, staff_api: APIClient, pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    production, candidate = pair
    created = start(staff_api, candidate)
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["state"], body["share"], body["previous_status"]) == ("running", 1.0, "testing")
    assert body["baseline"] == [production.pk] and status(candidate) == "shadow"
    shadow = Shadow.objects.get(pk=body["id"])
    records = adult_records(80)
    # The first ten copies wait in the queue while their feedback arrives: those pairs are
    # counted when the copies are written, the others when their feedback is.
    gate = Gate(ml_registry.get_registry().get(candidate), monkeypatch)
    served = []
    for i, (record, truth) in enumerate(records):
        answer = predict(api, record)
        assert answer.status_code == 200, answer.content
        served.append(answer.json())
        assert served[-1]["algorithm"]["id"] == production.pk  # the shadow never answers
        if i < 10:
            give(api, served[-1], truth)
        if i == 0:
            assert gate.entered.wait(10)
    assert ShadowAnswer.objects.count() == 0  # all still behind the blocked first copy
    gate.released.set()
    copying.drain()
    for answer, (_, truth) in list(zip(served, records, strict=True))[10:60]:
        give(api, answer, truth)
    copying.drain()
    # Each shadow answer is what the candidate answers to that record on its own.
    runtime = ml_registry.get_registry().get(candidate)
    expected = [p["label"] for p in runtime.compute_predictions([r for r, _ in records])]
    ids = [s["request_id"] for s in served]
    kept = dict(ShadowAnswer.objects.values_list("request_id", "response"))
    assert [kept[pk] for pk in ids] == expected
    # Production's log rows are as they would be without a shadow.
    assert [r for r in MLRequest.objects.order_by("pk").values_list("response", flat=True)] == [
        s["label"] for s in served
    ]
    got = counters(shadow)
    assert got == scanned(shadow) and got["pairs"] == 60
    labels = [s["label"] for s in served]
    assert shadow.copies == 80 and shadow.agreed == sum(
        a == b for a, b in zip(labels, expected, strict=True)
    )
    # A revision moves its pair; the counters still equal the scan.
    row = MLRequest.objects.get(pk=ids[3])
    assert row.feedback is not None
    staff = policy.Actor(user=operator("reviser"), address="127.0.0.1")
    feedback.give(
        request_id=row.pk,
        value=">50K" if row.feedback == "<=50K" else "<=50K",
        token=None,
        actor=staff,
    )
    assert counters(shadow) == scanned(shadow)
    # The API's comparison: McNemar is scipy's exact binomial test of b of b + c.
    read = staff_api.get(f"/api/v1/shadows/{shadow.pk}").json()["comparison"]
    b, c = int(got["b"]), int(got["c"])
    assert (read["mcnemar"]["only_production_right"], read["mcnemar"]["only_shadow_right"]) == (
        b,
        c,
    )
    if b + c:
        assert read["mcnemar"]["p_value"] == pytest.approx(stats.binomtest(b, b + c).pvalue)
    assert read["pairs"] == 60 and read["copies"] == 80 and read["dropped"] == 0
    assert read["agreement"]["rate"] == pytest.approx(shadow.agreed / 80)
    assert read["sequence"]["n"] == 60 and read["looks"] >= 50
    xp, xs = np.array(labelled(shadow)).T
    d = xs - xp
    assert read["sequence"]["estimate"] == pytest.approx(d.mean())
    if xp.var() + xs.var() > 0:
        assert read["pairing_gain"] == pytest.approx(
            d.var(ddof=1) / (xp.var(ddof=1) + xs.var(ddof=1))
        )
    # The report page and /metrics read the same shadow.
    page = Client().get(f"/shadows/{shadow.pk}/report")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'class="over-time"' in html and 'class="agreement"' in html
    metrics = Client().get("/metrics").content.decode()
    names = f'candidate="extra trees {candidate.version}",endpoint="income_classifier"'
    assert f'ml_shadow_copies_total{{{names},result="scored",shadow="{shadow.pk}"}} 80.0' in metrics
    assert f'ml_shadow_pairs{{{names},shadow="{shadow.pk}"}} 60.0' in metrics


def test_a_regressors_shadow_is_judged_on_absolute_errors_with_wilcoxon(
    api: APIClient, staff_api: APIClient, registry: MLRegistry
) -> None:
    """Two regressors trained here on load_diabetes: the pairs are |e| of each, and the
    Wilcoxon test is scipy's on their differences."""
    from apps.endpoints.tests.apis.test_any_model import register

    x, y = models.diabetes()
    baseline = models.diabetes_regressor()
    made = register(staff_api, baseline, endpoint="diabetes")
    assert made.status_code == 201, made.content
    from sklearn.linear_model import Ridge

    ridge = Ridge(alpha=0.5).fit(x, y)
    made = register(staff_api, ridge, endpoint="diabetes", version="2", status="testing")
    assert made.status_code == 201, made.content
    candidate = MLAlgorithm.objects.get(parent_endpoint__name="diabetes", version="2")
    shadow_id = start(staff_api, candidate).json()["id"]
    rows = json.loads(x.head(40).to_json(orient="records"))
    for record, truth in zip(rows, y[:40], strict=True):
        served = api.post("/api/v1/diabetes/predict", record, format="json").json()
        copying.drain()  # the copy before its feedback, this time
        give(api, served, str(truth))
    read = staff_api.get(f"/api/v1/shadows/{shadow_id}").json()["comparison"]
    truth_ = y[:40]
    e_p = np.abs(truth_ - baseline.predict(x.head(40)))
    e_s = np.abs(truth_ - ridge.predict(x.head(40)))
    d = e_p - e_s
    assert read["metric"] == "mean_absolute_error" and read["pairs"] == 40
    assert read["production"]["mean_absolute_error"] == pytest.approx(e_p.mean())
    assert read["shadow"]["mean_absolute_error"] == pytest.approx(e_s.mean())
    assert read["sequence"]["estimate"] == pytest.approx(d.mean())
    expected = stats.wilcoxon(d, zero_method="wilcox")
    assert read["wilcoxon"]["p_value"] == pytest.approx(expected.pvalue)
    assert read["wilcoxon"]["statistic"] == pytest.approx(expected.statistic)
    assert "pseudo-median" in read["wilcoxon"]["note"]
    gaps = ridge.predict(x.head(40)) - baseline.predict(x.head(40))
    assert read["agreement"]["mean_difference"] == pytest.approx(gaps.mean())


# -- never in the client's way ----------------------------------------------------------------


@pytest.mark.parametrize("fail", [False, True], ids=["blocks", "raises"])
def test_a_shadow_that_blocks_or_raises_never_touches_the_answer(
    api: APIClient, staff_api: APIClient, pair: Pair, monkeypatch: pytest.MonkeyPatch, fail: bool
) -> None:
    production, candidate = pair
    [(record, _)] = adult_records(1)
    before = predict(api, record).json()  # no shadow yet
    shadow = Shadow.objects.get(pk=start(staff_api, candidate).json()["id"])
    gate = Gate(ml_registry.get_registry().get(candidate), monkeypatch, fail=fail)
    answer = predict(api, record)
    # The answer is back and logged while the shadow's model has not returned: ordering,
    # not a clock.
    assert gate.entered.wait(10) and not gate.released.is_set()
    assert answer.status_code == 200
    body = answer.json()
    same = ("label", "probabilities", "algorithm")
    assert {k: body[k] for k in same} == {k: before[k] for k in same}
    logged = MLRequest.objects.get(pk=body["request_id"])
    assert (logged.response, logged.parent_mlalgorithm_id) == (before["label"], production.pk)
    assert not ShadowAnswer.objects.exists()
    gate.released.set()
    copying.drain()
    shadow.refresh_from_db()
    assert (shadow.copies, shadow.failed) == ((0, 1) if fail else (1, 0))
    assert ShadowAnswer.objects.count() == (0 if fail else 1)
    assert MLRequest.objects.get(pk=body["request_id"]).response == before["label"]


def test_a_full_queue_drops_copies_and_counts_them(
    api: APIClient, staff_api: APIClient, pair: Pair, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.SHADOW_QUEUE_SIZE = 2
    copying.reset()  # a worker with this queue size
    _, candidate = pair
    shadow = Shadow.objects.get(pk=start(staff_api, candidate).json()["id"])
    gate = Gate(ml_registry.get_registry().get(candidate), monkeypatch)
    records = adult_records(6)
    assert predict(api, records[0][0]).status_code == 200
    assert gate.entered.wait(10)  # the first copy is in the model; the queue is empty
    answers = [predict(api, record) for record, _ in records[1:]]
    assert [a.status_code for a in answers] == [200] * 5  # two wait, three are dropped
    gate.released.set()
    copying.drain()
    shadow.refresh_from_db()
    assert (shadow.copies, shadow.dropped) == (3, 3)
    assert ShadowAnswer.objects.count() == 3
    read = staff_api.get(f"/api/v1/shadows/{shadow.pk}").json()["comparison"]
    assert (read["copies"], read["dropped"]) == (3, 3)


def test_waiting_copies_are_scored_together_and_one_the_candidate_refuses_fails_alone(
    api: APIClient, staff_api: APIClient, pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, candidate = pair
    shadow = Shadow.objects.get(pk=start(staff_api, candidate).json()["id"])
    runtime = ml_registry.get_registry().get(candidate)
    gate = Gate(runtime, monkeypatch)
    blocked = runtime.predict_encoded
    sizes: list[int] = []

    def picky(encoded: Any) -> Any:
        matrix, _ = encoded  # the Adult bundle's input: the rows and what was filled
        sizes.append(len(matrix))
        # The three waiting copies come as one call, which fails; then one call each, of
        # which the second fails: only its copy may be lost.
        if len(sizes) in (2, 4):
            raise ValueError("the candidate refuses this")
        return blocked(encoded)

    monkeypatch.setattr(runtime, "predict_encoded", picky)
    records = adult_records(4)
    assert predict(api, records[0][0]).status_code == 200
    assert gate.entered.wait(10)
    for record, _ in records[1:]:
        assert predict(api, record).status_code == 200
    gate.released.set()
    copying.drain()
    assert sizes == [1, 3, 1, 1, 1]
    shadow.refresh_from_db()
    assert (shadow.copies, shadow.failed) == (3, 1)
    ids = list(MLRequest.objects.order_by("pk").values_list("pk", flat=True))
    assert sorted(ShadowAnswer.objects.values_list("request_id", flat=True)) == [
        ids[0],
        ids[1],
        ids[3],
    ]


@pytest.mark.parametrize("held", ["the log row", "the shadow's row"])
def test_on_postgresql_a_copy_waits_half_a_second_for_log_rows_and_is_counted_if_it_gives_up(
    api: APIClient, staff_api: APIClient, pair: Pair, monkeypatch: pytest.MonkeyPatch, held: str
) -> None:
    """Found by bench/shadow_bench.py: the 500 ms lock timeout also covered the shadow's row,
    and a copy that gave up was counted nowhere."""
    if connection.vendor != "postgresql":
        pytest.skip("lock_timeout is PostgreSQL's; SQLite writes one transaction at a time")
    _, candidate = pair
    shadow = Shadow.objects.get(pk=start(staff_api, candidate).json()["id"])
    gate = Gate(ml_registry.get_registry().get(candidate), monkeypatch)
    [(record, _)] = adult_records(1)
    served = predict(api, record).json()
    assert gate.entered.wait(10)
    with transaction.atomic():
        if held == "the log row":  # as a large file of feedback holds them
            MLRequest.objects.select_for_update().get(pk=served["request_id"])
        else:
            Shadow.objects.select_for_update().get(pk=shadow.pk)
        gate.released.set()
        time.sleep(1.0)  # past the copy's 500 ms
    copying.drain()
    shadow.refresh_from_db()
    expected = (0, 1) if held == "the log row" else (1, 0)
    assert (shadow.copies, shadow.failed) == expected
    assert ShadowAnswer.objects.count() == expected[0]


def test_a_share_copies_that_share_of_requests(
    api: APIClient, staff_api: APIClient, pair: Pair
) -> None:
    _, candidate = pair
    shadow = Shadow.objects.get(pk=start(staff_api, candidate, share=0.25).json()["id"])
    records = adult_records(120)
    for record, _ in records:
        assert predict(api, record).status_code == 200
    copying.drain()
    shadow.refresh_from_db()
    # Binomial(120, 0.25): 30 expected, sd 4.7; outside 8..52 has probability < 1e-5.
    assert 8 <= shadow.copies <= 52 and shadow.dropped == 0
    assert ShadowAnswer.objects.count() == shadow.copies


def test_a_shadow_never_answers_a_client_and_its_status_is_not_set_by_hand(
    api: APIClient, staff_api: APIClient, pair: Pair
) -> None:
    _, candidate = pair
    start(staff_api, candidate)
    [(record, _)] = adult_records(1)
    refused = predict(api, record, "?status=shadow")
    assert refused.status_code == 400 and "never answers" in refused.json()["error"]["message"]
    by_hand = staff_api.post(
        "/api/v1/mlalgorithmstatuses",
        {"status": "shadow", "parent_mlalgorithm": candidate.pk},
        format="json",
    )
    assert by_hand.status_code == 400 and "status" in by_hand.json()["error"]["details"]
    # Batch files are not copied.
    csv = "age,workclass\n"
    api.post("/api/v1/batch-predict", {"file": csv})
    copying.drain()
    assert not ShadowAnswer.objects.exists()


# -- starting and ending ------------------------------------------------------------------------


def test_starting_is_checked_and_needs_its_permission(
    api: APIClient, staff_api: APIClient, pair: Pair
) -> None:
    production, candidate = pair
    assert start(api, candidate).status_code in (401, 403)
    viewer = APIClient()
    viewer.force_authenticate(operator("viewer", permissions=["view_shadow", "change_shadow"]))
    denied = start(viewer, candidate)
    assert denied.status_code == 403 and "add_shadow" in denied.json()["error"]["message"]
    serving = start(staff_api, production)
    assert serving.status_code == 400 and "serves clients" in serving.json()["error"]["message"]
    assert start(staff_api, candidate, share=0).status_code == 400
    assert start(staff_api, candidate, share=1.5).status_code == 400
    few = start(staff_api, candidate, planned_feedback=0)
    assert few.status_code == 400 and "planned_feedback" in few.json()["error"]["details"]
    assert start(staff_api, candidate).status_code == 201
    again = start(staff_api, candidate)
    assert again.status_code in (400, 409)
    assert Shadow.objects.count() == 1


def test_an_id_that_is_not_a_shadows_is_a_404(staff_api: APIClient, pair: Pair) -> None:
    """The fuzzer's finding: ``null,null`` as the id answered 500 (``int()`` of it)."""
    for pk in ("null%2Cnull", "x", "99", str(2**70)):
        for action in ("stop", "promote", "ab_test"):
            answer = staff_api.post(f"/api/v1/shadows/{pk}/{action}", {}, format="json")
            assert answer.status_code == 404, (pk, action, answer.content)


def test_stop_restores_the_candidates_status_once(staff_api: APIClient, pair: Pair) -> None:
    _, candidate = pair
    shadow_id = start(staff_api, candidate).json()["id"]
    stopped = staff_api.post(f"/api/v1/shadows/{shadow_id}/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    assert status(candidate) == "testing"
    again = staff_api.post(f"/api/v1/shadows/{shadow_id}/stop")
    assert again.status_code == 409 and again.json()["error"]["code"] == "shadow_ended"


def test_concurrent_promotes_have_exactly_one_winner(pair: Pair) -> None:
    production, candidate = pair
    shadow = services.create(candidate=candidate, created_by="op")
    barrier = threading.Barrier(4)
    won: list[str] = []
    refused: list[BaseException] = []
    errors: list[BaseException] = []

    def promote(name: str) -> None:
        try:
            barrier.wait()
            services.promote(shadow_id=shadow.pk, promoted_by=name)
            won.append(name)
        except ShadowEnded as exc:
            refused.append(exc)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=promote, args=(f"op{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(won) == 1 and len(refused) == 3
    shadow.refresh_from_db()
    assert (shadow.state, shadow.ended_by) == ("promoted", won[0])
    assert (status(production), status(candidate)) == ("testing", "production")
    # One decision: the candidate went shadow -> production once.
    assert candidate.statuses.count() == 3 and production.statuses.count() == 2


def test_promote_waits_for_a_running_ab_test_and_an_ab_test_can_start_from_a_shadow(
    staff_api: APIClient, pair: Pair, demo_registry: MLRegistry
) -> None:
    production, candidate = pair
    shadow_id = start(staff_api, candidate).json()["id"]
    made = staff_api.post(
        f"/api/v1/shadows/{shadow_id}/ab_test", {"arm_2_share": 0.2}, format="json"
    )
    assert made.status_code == 201, made.content
    test = made.json()
    assert (test["parent_mlalgorithm_1"], test["parent_mlalgorithm_2"]) == (
        production.pk,
        candidate.pk,
    )
    # The test remembers the candidate's status from before the shadow.
    assert test["previous_status_2"] == "testing" and test["arm_2_share"] == 0.2
    shadow = Shadow.objects.get(pk=shadow_id)
    assert (shadow.state, shadow.ab_test_id) == ("ab_test", test["id"])
    # A shadow started during the test is compared with both arms; promote waits for the
    # test to decide what is in production.
    third = algorithm(
        demo_registry, name="third", version="3", status="testing", artifact="extra_trees.joblib"
    )
    during = services.create(candidate=third, created_by="op")
    assert sorted(during.baseline) == sorted([production.pk, candidate.pk])
    with pytest.raises(Conflict, match="A/B test"):
        services.promote(shadow_id=during.pk, promoted_by="op")
    assert Shadow.objects.get(pk=during.pk).state == "running"  # the refusal changed nothing


def test_changing_production_ends_the_shadow_recorded(staff_api: APIClient, pair: Pair) -> None:
    production, candidate = pair
    shadow_id = start(staff_api, candidate).json()["id"]
    changed = staff_api.post(
        "/api/v1/mlalgorithmstatuses",
        {"status": "staging", "parent_mlalgorithm": production.pk},
        format="json",
    )
    assert changed.status_code == 201
    shadow = Shadow.objects.get(pk=shadow_id)
    assert shadow.state == "ended" and "random forest" in shadow.end_reason
    assert status(candidate) == "testing"  # given back
    assert staff_api.post(f"/api/v1/shadows/{shadow_id}/promote").status_code == 409


def test_deleting_requests_takes_their_pairs_out(
    api: APIClient, staff_api: APIClient, pair: Pair
) -> None:
    _, candidate = pair
    shadow = Shadow.objects.get(pk=start(staff_api, candidate).json()["id"])
    for record, truth in adult_records(12):
        served = predict(api, record).json()
        copying.drain()
        give(api, served, truth)
    assert counters(shadow)["pairs"] == 12
    first = list(MLRequest.objects.order_by("pk").values_list("pk", flat=True)[:5])
    assert feedback.delete_requests(MLRequest.objects.filter(pk__in=first)) == 5
    assert counters(shadow) == scanned(shadow) and counters(shadow)["pairs"] == 7
    assert ShadowAnswer.objects.count() == 7


# -- the admin ------------------------------------------------------------------------------


def test_the_admin_starts_a_shadow_shows_it_and_promotes_it_once(pair: Pair) -> None:
    production, candidate = pair
    client = Client()
    client.force_login(operator())
    form = client.get("/admin/endpoints/shadow/add/")
    assert form.status_code == 200
    refused = client.post(
        "/admin/endpoints/shadow/add/", {"candidate": production.pk, "share": 1, "alpha": 0.05}
    )
    assert refused.status_code == 200 and "serves clients" in refused.content.decode()
    added = client.post(
        "/admin/endpoints/shadow/add/", {"candidate": candidate.pk, "share": 0.5, "alpha": 0.05}
    )
    assert added.status_code == 302, added.content
    shadow = Shadow.objects.get()
    assert (shadow.share, shadow.created_by, status(candidate)) == (0.5, "operator", "shadow")
    listed = client.get("/admin/endpoints/shadow/")
    assert listed.status_code == 200 and f"/shadows/{shadow.pk}/report" in listed.content.decode()
    assert client.get(f"/admin/endpoints/shadow/{shadow.pk}/change/").status_code == 200
    for _ in range(2):  # the second finds it ended and says so
        client.post(
            "/admin/endpoints/shadow/",
            {"action": "promote_shadows", "_selected_action": [shadow.pk]},
        )
    assert (status(production), status(candidate)) == ("testing", "production")
    assert candidate.statuses.count() == 3  # testing, shadow, production: promoted once
    # Without the permission to end shadows, the actions are not offered.
    viewer = Client()
    viewer.force_login(operator("viewer", permissions=["view_shadow"]))
    page = viewer.get("/admin/endpoints/shadow/").content.decode()
    assert "promote_shadows" not in page and "stop_shadows" not in page
