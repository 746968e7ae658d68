"""A/B tests over HTTP: create, route with X-Assignment-Key, stop, report, admin."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from apps.endpoints.models import ABTest, MLAlgorithm, MLRequest
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db
PREDICT = "/api/v1/income_classifier/predict?status=ab_testing"


@pytest.fixture
def arms(demo_registry: MLRegistry) -> tuple[MLAlgorithm, MLAlgorithm]:
    return MLAlgorithm.objects.get(name="random forest"), MLAlgorithm.objects.get(
        name="extra trees"
    )


def create(staff_api: APIClient, arms: tuple[MLAlgorithm, MLAlgorithm], **extra: Any) -> Any:
    body = {
        "title": "rf vs et",
        "parent_mlalgorithm_1": arms[0].pk,
        "parent_mlalgorithm_2": arms[1].pk,
        **extra,
    }
    return staff_api.post("/api/v1/abtests", body, format="json")


def predict(api: APIClient, key: str | None = None) -> dict[str, Any]:
    headers: dict[str, Any] = {"HTTP_X_ASSIGNMENT_KEY": key} if key is not None else {}
    response = api.post(
        PREDICT, data=json.dumps(SAMPLE_RECORD), content_type="application/json", **headers
    )
    assert response.status_code == 200, response.content
    return dict(response.json())


def stop(client: APIClient, abtest_id: int, **body: Any) -> Any:
    return client.post(f"/api/v1/stop_ab_test/{abtest_id}", body, format="json")


def current(alg: MLAlgorithm) -> str:
    return str(alg.statuses.get(active=True).status)


def test_staff_create_a_test_with_a_split_and_get_a_report_url(
    staff_api: APIClient, arms: tuple[MLAlgorithm, MLAlgorithm]
) -> None:
    response = create(staff_api, arms, arm_2_share=0.25, alpha=0.01, require_significance=True)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["state"] == "running" and body["created_by"] == "operator"
    assert (body["arm_2_share"], body["alpha"], body["require_significance"]) == (0.25, 0.01, True)
    assert (body["previous_status_1"], body["previous_status_2"]) == ("production", "testing")
    assert body["report_url"] == f"http://testserver/abtests/{body['id']}/report"
    assert [current(a) for a in arms] == ["ab_testing", "ab_testing"]


def test_a_second_test_with_a_busy_arm_is_a_400_with_the_reason(
    staff_api: APIClient, arms: tuple[MLAlgorithm, MLAlgorithm]
) -> None:
    first = create(staff_api, arms).json()["id"]
    response = create(staff_api, arms[::-1])
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and f"running A/B test ({first}" in error["message"]
    assert set(error["details"]) == {"parent_mlalgorithm_1", "parent_mlalgorithm_2"}
    assert create(staff_api, arms, alpha=2).json()["error"]["details"] == {
        "alpha": ["Must be greater than 0 and less than 1."]
    }


def test_the_assignment_key_header_makes_the_arm_sticky_and_requests_record_the_test(
    api: APIClient, staff_api: APIClient, arms: tuple[MLAlgorithm, MLAlgorithm]
) -> None:
    test_id = create(staff_api, arms).json()["id"]
    for key in ("alice", "bob"):
        served = {predict(api, key)["algorithm"]["id"] for _ in range(5)}
        assert len(served) == 1, key
    everyone = {predict(api, f"user-{i}")["algorithm"]["id"] for i in range(30)}
    assert everyone == {a.pk for a in arms}
    assert set(MLRequest.objects.values_list("ab_test", flat=True)) == {test_id}
    too_long = api.post(
        PREDICT,
        data=json.dumps(SAMPLE_RECORD),
        content_type="application/json",
        HTTP_X_ASSIGNMENT_KEY="k" * 257,
    )
    assert too_long.status_code == 400
    assert "X-Assignment-Key" in too_long.json()["error"]["details"]


def test_only_staff_may_stop_a_test(
    api: APIClient,
    staff_api: APIClient,
    arms: tuple[MLAlgorithm, MLAlgorithm],
    django_user_model: type[User],
) -> None:
    test_id = create(staff_api, arms).json()["id"]
    assert stop(api, test_id, force=True).status_code in (401, 403)
    user = django_user_model.objects.create_user("visitor", password="pw")
    member = APIClient()
    member.force_authenticate(user)
    response = stop(member, test_id, force=True)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert ABTest.objects.get().state == "running"


def test_the_design_procedure_end_to_end(
    api: APIClient, staff_api: APIClient, arms: tuple[MLAlgorithm, MLAlgorithm]
) -> None:
    test_id = create(staff_api, arms).json()["id"]
    for i in range(40):
        served = predict(api, f"user-{i}")
        # Arm 1 is always right, arm 2 always wrong: the feedback decides the winner.
        truth = (
            served["label"]
            if served["algorithm"]["id"] == arms[0].pk
            else (">50K" if served["label"] == "<=50K" else "<=50K")
        )
        url = f"/api/v1/mlrequests/{served['request_id']}"
        body = {"feedback": truth, "feedback_token": served["feedback_token"]}
        assert api.put(url, body, format="json").status_code == 200
    response = stop(staff_api, test_id)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["state"] == "stopped" and body["stopped_by"] == "operator"
    assert body["summary_json"]["outcome"] == "arm_1_promoted"
    assert [a["accuracy"] for a in body["summary_json"]["arms"]] == [1.0, 0.0]
    # One test client sent all the feedback, from one address: the summary says so.
    assert body["summary_json"]["feedback_clients"] == 1
    assert "The feedback came from 1 distinct client." in body["summary"]
    assert body["summary_json"]["comparison"]["significant"] is True
    assert "Arm 1 was more accurate" in body["summary"]
    assert [current(a) for a in arms] == ["production", "testing"]
    again = stop(staff_api, test_id)
    assert again.status_code == 409 and again.json()["error"]["code"] == "ab_test_stopped"
    assert api.get(f"/api/v1/abtests/{test_id}").json()["summary"] == body["summary"]


def test_stopping_without_feedback_is_a_409_unless_forced(
    api: APIClient, staff_api: APIClient, arms: tuple[MLAlgorithm, MLAlgorithm]
) -> None:
    test_id = create(staff_api, arms).json()["id"]
    predict(api, "someone")
    response = stop(staff_api, test_id)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "not_enough_data" and "pass force" in error["message"]
    assert [current(a) for a in arms] == ["ab_testing", "ab_testing"]
    forced = stop(staff_api, test_id, force=True)
    assert forced.status_code == 200 and forced.json()["state"] == "aborted"
    assert [current(a) for a in arms] == ["production", "testing"]


def test_stopping_an_unknown_test_is_a_404_and_get_is_not_allowed(
    staff_api: APIClient, arms: tuple[MLAlgorithm, MLAlgorithm]
) -> None:
    assert stop(staff_api, 999999).json()["error"]["code"] == "not_found"
    assert staff_api.get("/api/v1/stop_ab_test/1").status_code == 405
    assert stop(staff_api, 1, force="maybe").status_code == 400


def test_the_report_page_shows_the_arms_with_intervals_as_svg(
    client: Client, api: APIClient, staff_api: APIClient, arms: tuple[MLAlgorithm, MLAlgorithm]
) -> None:
    test_id = create(staff_api, arms).json()["id"]
    served = predict(api, "a")
    given = api.put(
        f"/api/v1/mlrequests/{served['request_id']}",
        {"feedback": served["label"], "feedback_token": served["feedback_token"]},
        format="json",
    )
    assert given.status_code == 200, given.content
    running = client.get(f"/abtests/{test_id}/report")
    assert running.status_code == 200 and running["Content-Type"].startswith("text/html")
    page = running.content.decode()
    assert "<svg" in page and "no feedback yet" in page and "numbers so far" in page
    assert page.count('class="arm"') == 1  # only the arm with feedback has an interval
    other = next(a for a in arms if a.pk != served["algorithm"]["id"])
    MLRequest.objects.create(
        input_data={},
        full_response={},
        response="<=50K",
        feedback=">50K",
        parent_mlalgorithm=other,
        ab_test_id=test_id,
    )
    stop(staff_api, test_id)
    page = client.get(f"/abtests/{test_id}/report").content.decode()
    assert page.count('class="arm"') == 2 and "1/1" in page and "0/1" in page
    assert "numbers so far" not in page and "fisher_exact_test" in page
    assert client.get("/abtests/999999/report").status_code == 404


@pytest.fixture
def admin_client_(client: Client, django_user_model: type[User]) -> Client:
    user = django_user_model.objects.create_superuser("admin", "a@example.com", "pw")
    client.force_login(user)
    return client


def test_the_admin_lists_accuracy_links_the_report_and_stops_with_the_same_function(
    admin_client_: Client, staff_api: APIClient, arms: tuple[MLAlgorithm, MLAlgorithm]
) -> None:
    test_id = create(staff_api, arms).json()["id"]
    rows = [(arms[0], "<=50K", "<=50K"), (arms[0], "<=50K", ">50K"), (arms[1], ">50K", ">50K")]
    for arm, response, feedback in rows:
        MLRequest.objects.create(
            input_data={},
            full_response={},
            response=response,
            feedback=feedback,
            parent_mlalgorithm=arm,
            ab_test_id=test_id,
        )
    listing = admin_client_.get("/admin/endpoints/abtest/").content.decode()
    assert "50.0% (1/2)" in listing and "100.0% (1/1)" in listing
    assert f'href="/abtests/{test_id}/report"' in listing
    page = admin_client_.post(
        "/admin/endpoints/abtest/",
        {"action": "stop_tests", "_selected_action": [test_id]},
        follow=True,
    )
    assert page.status_code == 200
    stopped = ABTest.objects.get()
    assert stopped.state == "stopped" and stopped.stopped_by == "admin"
    assert [current(a) for a in arms] == ["testing", "production"]
    again = admin_client_.post(
        "/admin/endpoints/abtest/",
        {"action": "stop_tests", "_selected_action": [test_id]},
        follow=True,
    )
    assert "already ended" in again.content.decode()
    assert admin_client_.get(f"/admin/endpoints/abtest/{test_id}/change/").status_code == 200
