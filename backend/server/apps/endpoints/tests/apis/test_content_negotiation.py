"""Every route answers each media type it serves, and a 406 in the one JSON error shape for
any other: what ``Accept`` (or ``?format=``) asks for is what comes back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from apps.endpoints.batch import tasks
from apps.endpoints.models import ABTest, MLAlgorithm, MLRequest
from apps.endpoints.tests.factories import operator, sent
from apps.endpoints.tests.job_factories import ROWS, use_job_storage
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db

CSV_FILE = ",".join(SAMPLE_RECORD) + "\n" + ",".join(str(v) for v in SAMPLE_RECORD.values())
HTML, JSON, CSV = "text/html", "application/json", "text/csv"


def _upload() -> dict[str, Any]:
    return {"file": SimpleUploadedFile("f.csv", CSV_FILE.encode())}


# (method, path, body, the media types it serves). Paths name {ids} the fixture makes.
ROUTES: list[tuple[str, str, Callable[[], dict[str, Any]] | None, list[str]]] = [
    ("get", "/api/v1/endpoints", None, [JSON, HTML]),
    ("get", "/api/v1/mlalgorithms", None, [JSON, HTML]),
    ("get", "/api/v1/mlalgorithms/{algorithm}", None, [JSON, HTML]),
    ("get", "/api/v1/mlalgorithmstatuses", None, [JSON, HTML]),
    ("get", "/api/v1/abtests", None, [JSON, HTML]),
    ("get", "/api/v1/mlrequests", None, [JSON, HTML]),
    ("get", "/api/v1/mlrequests/{request}", None, [JSON, HTML]),
    ("post", "/api/v1/income_classifier/predict", lambda: SAMPLE_RECORD, [JSON, HTML]),
    ("post", "/api/v1/batch-predict", _upload, [JSON, CSV, HTML]),
    ("get", "/api/v1/batch-jobs", None, [JSON, HTML]),
    ("get", "/api/v1/batch-jobs/{job}", None, [JSON, HTML]),
    ("get", "/api/v1/batch-jobs/{job}/result", None, [CSV]),
    ("get", "/api/v1/schema", None, ["application/vnd.oai.openapi", JSON]),
]


@pytest.fixture
def ids(demo_registry: MLRegistry, settings: Any, tmp_path: Any) -> dict[str, int]:
    use_job_storage(settings, tmp_path / "jobs")
    from apps.endpoints.tests.job_factories import job_in

    rf, et = MLAlgorithm.objects.order_by("id")
    request = MLRequest.objects.create(
        input_data=SAMPLE_RECORD, full_response={}, response="<=50K", parent_mlalgorithm=rf
    )
    ABTest.objects.create(title="t", created_by="x", parent_mlalgorithm_1=rf,
                          parent_mlalgorithm_2=et)  # fmt: skip
    job = job_in("succeeded", rows=ROWS)
    return {"algorithm": rf.pk, "request": request.pk, "job": job.pk}


def call(client: APIClient, method: str, path: str, body: Any, accept: str) -> Any:
    data = body() if body is not None else None
    if method == "post" and isinstance(data, dict) and "file" not in data:
        return client.post(path, data, format="json", HTTP_ACCEPT=accept)
    return getattr(client, method)(path, data, HTTP_ACCEPT=accept)


@pytest.mark.parametrize(("method", "path", "body", "types"), ROUTES, ids=[r[1] for r in ROUTES])
def test_each_route_answers_what_it_serves_and_406_to_the_rest(
    ids: dict[str, int], method: str, path: str, body: Any, types: list[str]
) -> None:
    client = APIClient()
    client.force_authenticate(operator())
    url = path.format(**ids)
    for media_type in types:
        response = call(client, method, url, body, media_type)
        assert response.status_code == 200, (media_type, response.status_code)
        assert response["Content-Type"].startswith(media_type), response["Content-Type"]
        sent(response)
        tasks.drain()
    refused = call(client, method, url, body, "image/png")
    assert refused.status_code == 406, refused.status_code
    assert refused["Content-Type"].startswith(JSON)
    assert refused.json()["error"]["code"] == "not_acceptable"
