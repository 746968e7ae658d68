"""Endpoints, algorithms, statuses, requests (feedback) and A/B tests over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.endpoints.models import ABTest, MLAlgorithm
from apps.endpoints.tests.factories import algorithm
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db


def predicted(api: APIClient) -> int:
    response = api.post(
        "/api/v1/income_classifier/predict",
        data=json.dumps(SAMPLE_RECORD),
        content_type="application/json",
    )
    return int(response.json()["request_id"])


def results(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.content
    return list(response.json()["results"])


def test_algorithms_list_their_current_status_in_two_queries(
    api: APIClient, demo_registry: MLRegistry, django_assert_num_queries: Any
) -> None:
    # count, algorithms with endpoints, active statuses, drift references
    with django_assert_num_queries(4):
        rows = results(api.get("/api/v1/mlalgorithms"))
    assert {r["name"]: r["current_status"] for r in rows} == {
        "random forest": "production",
        "extra trees": "testing",
    }
    assert results(api.get("/api/v1/endpoints"))[0]["name"] == "income_classifier"


def test_reading_the_request_log_needs_a_login(
    api: APIClient, staff_api: APIClient, demo_registry: MLRegistry
) -> None:
    request_id = predicted(api)
    assert api.get("/api/v1/mlrequests").status_code in (401, 403)
    assert api.get(f"/api/v1/mlrequests/{request_id}").status_code in (401, 403)
    rows = results(staff_api.get("/api/v1/mlrequests"))
    assert rows[0]["input_data"] == SAMPLE_RECORD


def test_staff_change_a_status_and_the_previous_one_is_deactivated(
    staff_api: APIClient, demo_registry: MLRegistry
) -> None:
    rf = MLAlgorithm.objects.get(name="random forest")
    response = staff_api.post(
        "/api/v1/mlalgorithmstatuses",
        {"status": "staging", "parent_mlalgorithm": rf.pk},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["active"] is True and response.json()["created_by"] == "operator"
    assert list(rf.statuses.filter(active=True).values_list("status", flat=True)) == ["staging"]
    assert rf.statuses.count() == 2


def test_anonymous_users_cannot_change_the_catalogue(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    rf = MLAlgorithm.objects.get(name="random forest")
    response = api.post(
        "/api/v1/mlalgorithmstatuses",
        {"status": "staging", "parent_mlalgorithm": rf.pk},
        format="json",
    )
    assert response.status_code in (401, 403)
    assert response.json()["error"]["code"] in ("not_authenticated", "permission_denied")
    assert rf.statuses.count() == 1
    assert api.post("/api/v1/abtests", {}, format="json").status_code in (401, 403)


def test_an_invalid_status_is_a_400(staff_api: APIClient, demo_registry: MLRegistry) -> None:
    rf = MLAlgorithm.objects.get(name="random forest")
    response = staff_api.post(
        "/api/v1/mlalgorithmstatuses",
        {"status": "retired", "parent_mlalgorithm": rf.pk},
        format="json",
    )
    assert response.status_code == 400
    assert "status" in response.json()["error"]["details"]


def test_staff_create_and_read_ab_tests(staff_api: APIClient, demo_registry: MLRegistry) -> None:
    rf, et = (
        MLAlgorithm.objects.get(name="random forest"),
        MLAlgorithm.objects.get(name="extra trees"),
    )
    response = staff_api.post(
        "/api/v1/abtests",
        {"title": "rf vs et", "parent_mlalgorithm_1": rf.pk, "parent_mlalgorithm_2": et.pk},
        format="json",
    )
    assert response.status_code == 201, response.content
    test_id = response.json()["id"]
    assert staff_api.get(f"/api/v1/abtests/{test_id}").json()["title"] == "rf vs et"
    assert ABTest.objects.get().created_by == "operator"


def test_an_ab_test_needs_two_algorithms_of_one_endpoint(
    staff_api: APIClient, registry: MLRegistry
) -> None:
    a = algorithm(registry)
    b = algorithm(registry, endpoint="other_endpoint")
    same = {"title": "t", "parent_mlalgorithm_1": a.pk, "parent_mlalgorithm_2": a.pk}
    other = {"title": "t", "parent_mlalgorithm_1": a.pk, "parent_mlalgorithm_2": b.pk}
    for body in (same, other):
        response = staff_api.post("/api/v1/abtests", body, format="json")
        assert response.status_code == 400
        assert "parent_mlalgorithm_2" in response.json()["error"]["details"]
    missing = {"title": "t", "parent_mlalgorithm_1": a.pk, "parent_mlalgorithm_2": 9999}
    assert staff_api.post("/api/v1/abtests", missing, format="json").status_code == 400
    assert ABTest.objects.count() == 0


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/",
        "/api/v1/endpoints",
        "/api/v1/mlalgorithms",
        "/api/v1/mlalgorithms/{first_id}",
        "/api/v1/mlalgorithmstatuses",
        "/api/v1/mlrequests",
        "/api/v1/abtests",
    ],
)
def test_the_browsable_api_renders_every_route(
    staff_api: APIClient, demo_registry: MLRegistry, path: str
) -> None:
    # Ids come from the database: PostgreSQL sequences do not restart between tests.
    first_id = MLAlgorithm.objects.order_by("id").values_list("id", flat=True).first()
    response = staff_api.get(path.format(first_id=first_id), HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"<html" in response.content.lower()
    assert b"breadcrumb" in response.content  # the DRF page, not an error page
