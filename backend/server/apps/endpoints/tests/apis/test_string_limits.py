"""Over-long strings, wherever a client can send one, are a 400 (or 404 for a path) that
does not echo them back, and nothing is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.endpoints.models import ABTest, MLAlgorithm, MLAlgorithmStatus, MLRequest
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db
PREDICT = "/api/v1/income_classifier/predict"
LONG = "x" * 100_000  # within MAX_BODY_BYTES, so the length rule itself must refuse it


def assert_refused_briefly(response: Any, status: int = 400) -> None:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["message"]
    assert len(response.content) < 4_000  # the string is not echoed back


def post_json(api: APIClient, url: str, body: Any) -> Any:
    return api.post(url, data=json.dumps(body), content_type="application/json")


@pytest.mark.parametrize("field", ["workclass", "native-country", "age"])
def test_a_long_feature_value(api: APIClient, demo_registry: MLRegistry, field: str) -> None:
    assert_refused_briefly(post_json(api, PREDICT, {**SAMPLE_RECORD, field: LONG}))
    assert not MLRequest.objects.exists()


def test_a_long_feature_name(api: APIClient, demo_registry: MLRegistry) -> None:
    assert_refused_briefly(post_json(api, PREDICT, {**SAMPLE_RECORD, LONG: 1}))
    assert not MLRequest.objects.exists()


@pytest.mark.parametrize("query", ["version", "status"])
def test_a_long_query_parameter(api: APIClient, demo_registry: MLRegistry, query: str) -> None:
    response = post_json(api, f"{PREDICT}?{query}={'x' * 5_000}", SAMPLE_RECORD)
    assert_refused_briefly(response)
    assert not MLRequest.objects.exists()


def test_a_long_endpoint_name(api: APIClient, demo_registry: MLRegistry) -> None:
    assert_refused_briefly(post_json(api, f"/api/v1/{'e' * 5_000}/predict", SAMPLE_RECORD), 404)


def test_a_long_assignment_key(api: APIClient, demo_registry: MLRegistry) -> None:
    response = api.post(
        PREDICT,
        data=json.dumps(SAMPLE_RECORD),
        content_type="application/json",
        HTTP_X_ASSIGNMENT_KEY="k" * 5_000,
    )
    assert_refused_briefly(response)


@pytest.mark.parametrize("field", ["feedback", "feedback_token"])
def test_long_feedback(api: APIClient, demo_registry: MLRegistry, field: str) -> None:
    served = post_json(api, PREDICT, SAMPLE_RECORD).json()
    body = {"feedback": ">50K", "feedback_token": served["feedback_token"], field: LONG}
    response = api.patch(
        f"/api/v1/mlrequests/{served['request_id']}",
        data=json.dumps(body),
        content_type="application/json",
    )
    assert_refused_briefly(response)
    assert MLRequest.objects.get(pk=served["request_id"]).feedback is None


def test_long_management_strings(staff_api: APIClient, demo_registry: MLRegistry) -> None:
    first, second = MLAlgorithm.objects.values_list("pk", flat=True)  # the two demo models
    response = post_json(
        staff_api,
        "/api/v1/abtests",
        {
            "title": LONG,
            "parent_mlalgorithm_1": first,
            "parent_mlalgorithm_2": second,
        },
    )
    assert_refused_briefly(response)
    assert not ABTest.objects.exists()
    before = MLAlgorithmStatus.objects.count()
    response = post_json(
        staff_api,
        "/api/v1/mlalgorithmstatuses",
        {
            "status": LONG,
            "parent_mlalgorithm": first,
        },
    )
    assert_refused_briefly(response)
    assert MLAlgorithmStatus.objects.count() == before
