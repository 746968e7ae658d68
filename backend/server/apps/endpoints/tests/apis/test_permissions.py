"""The permission matrix: every route, as an anonymous client, a user and a staff user."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from apps.endpoints.models import MLAlgorithm, MLRequest
from apps.endpoints.serving import feedback
from apps.endpoints.tests.factories import operator
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db
CSV = ",".join(SAMPLE_RECORD) + "\n" + ",".join(str(v) for v in SAMPLE_RECORD.values()) + "\n"

# route -> expected status for (anonymous, user, staff without permissions, operator), with
# PREDICT_ACCESS=open. An operator is a staff user with the endpoints app's permissions
# (factories.operator); is_staff alone changes nothing. The logged request was made
# anonymously: only an operator reads it, only its token (or an operator) gives feedback.
MATRIX: list[tuple[str, str, str, tuple[int, int, int, int]]] = [
    ("read endpoints", "get", "/api/v1/endpoints", (200, 200, 200, 200)),
    ("read algorithms", "get", "/api/v1/mlalgorithms", (200, 200, 200, 200)),
    ("read statuses", "get", "/api/v1/mlalgorithmstatuses", (200, 200, 200, 200)),
    ("read A/B tests", "get", "/api/v1/abtests", (200, 200, 200, 200)),
    ("read the request log", "get", "/api/v1/mlrequests", (401, 200, 200, 200)),
    ("read one logged request", "get", "/api/v1/mlrequests/{request}", (401, 404, 404, 200)),
    ("predict", "post", "/api/v1/income_classifier/predict", (200, 200, 200, 200)),
    ("batch-predict", "post", "/api/v1/batch-predict", (200, 200, 200, 200)),
    ("feedback with the token", "patch", "/api/v1/mlrequests/{request}", (200, 200, 200, 200)),
    ("feedback without a token", "patch", "/api/v1/mlrequests/{request}", (403, 403, 403, 200)),
    ("feedback file with tokens", "post", "/api/v1/feedback", (200, 200, 200, 200)),
    ("change a status", "post", "/api/v1/mlalgorithmstatuses", (401, 403, 403, 201)),
    ("create an A/B test", "post", "/api/v1/abtests", (401, 403, 403, 201)),
    ("stop an A/B test", "post", "/api/v1/stop_ab_test/{abtest}", (401, 403, 403, 409)),
    ("delete an endpoint", "delete", "/api/v1/endpoints/{endpoint}", (401, 403, 403, 405)),
    ("edit an algorithm", "patch", "/api/v1/mlalgorithms/{algorithm}", (401, 403, 403, 405)),
    ("schema", "get", "/api/v1/schema", (200, 200, 200, 200)),
]


def body_for(name: str, ids: dict[str, int]) -> dict[str, Any]:
    if name == "predict":
        return {"data": json.dumps(SAMPLE_RECORD), "content_type": "application/json"}
    if name == "batch-predict":
        return {"data": {"file": SimpleUploadedFile("f.csv", CSV.encode())}}
    if name == "feedback with the token":
        token = feedback.token_for(ids["request"])
        return {"data": {"feedback": ">50K", "feedback_token": token}, "format": "json"}
    if name == "feedback without a token":
        return {"data": {"feedback": ">50K"}, "format": "json"}
    if name == "feedback file with tokens":
        text = f"request_id,feedback_token,feedback\n{ids['request']},"
        text += f"{feedback.token_for(ids['request'])},>50K\n"
        return {"data": {"file": SimpleUploadedFile("f.csv", text.encode())}}
    if name == "change a status":
        return {
            "data": {"status": "staging", "parent_mlalgorithm": ids["algorithm"]},
            "format": "json",
        }
    if name == "create an A/B test":
        return {
            "data": {
                "title": "t",
                "parent_mlalgorithm_1": ids["algorithm"],
                "parent_mlalgorithm_2": ids["other"],
            },
            "format": "json",
        }
    if name in ("stop an A/B test", "edit an algorithm"):
        return {"data": {}, "format": "json"}
    return {}


@pytest.mark.parametrize(("name", "method", "path", "expected"), MATRIX, ids=[m[0] for m in MATRIX])
@pytest.mark.parametrize("who", [0, 1, 2, 3], ids=["anonymous", "user", "staff", "operator"])
def test_the_permission_matrix(
    demo_registry: MLRegistry,
    django_user_model: Any,
    who: int,
    name: str,
    method: str,
    path: str,
    expected: tuple[int, int, int, int],
) -> None:
    from apps.endpoints.experiments import ab_testing

    rf, et = (
        MLAlgorithm.objects.get(name="random forest"),
        MLAlgorithm.objects.get(name="extra trees"),
    )
    request = MLRequest.objects.create(
        input_data=SAMPLE_RECORD, full_response={}, response="<=50K", parent_mlalgorithm=rf
    )
    abtest_id = 0
    if name == "stop an A/B test":  # a running test, without feedback yet: 409 for staff
        abtest_id = ab_testing.create(
            title="running", created_by="t", parent_mlalgorithm_1=rf, parent_mlalgorithm_2=et
        ).pk
    ids = {
        "request": request.pk,
        "abtest": abtest_id,
        "endpoint": rf.parent_endpoint_id,
        "algorithm": rf.pk,
        "other": et.pk,
    }
    client = APIClient()
    if who == 3:
        client.force_authenticate(operator())
    elif who:
        user = django_user_model.objects.create_user(f"u{who}", password="pw", is_staff=who == 2)
        client.force_authenticate(user)
    response = getattr(client, method)(path.format(**ids), **body_for(name, ids))
    assert response.status_code == expected[who], response.content[:300]
    if response.status_code >= 400:
        assert response.json()["error"]["code"]  # the one error shape, always
