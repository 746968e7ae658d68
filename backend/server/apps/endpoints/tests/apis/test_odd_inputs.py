"""Inputs an attacker tried that answered 500: each is a 4xx in the one error shape now.
Regressions of the third attack on the running service (issue 25)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from rest_framework.test import APIClient

from apps.endpoints.models import MLRequest
from apps.endpoints.tests.factories import operator
from apps.endpoints.tests.job_factories import job_in, use_job_storage
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db
PREDICT = "/api/v1/income_classifier/predict"


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.content[:300])
    error: dict[str, Any] = response.json()["error"]
    return error


@pytest.mark.parametrize("token", ["jöb", "\u00e9" * 32, "€"])
def test_a_job_token_that_is_not_ascii_is_no_key_not_a_crash(
    api: APIClient, demo_registry: MLRegistry, settings: Any, tmp_path: Path, token: str
) -> None:
    use_job_storage(settings, tmp_path / "jobs")
    job = job_in("queued")
    header = token.encode().decode("latin-1")  # what arrives in a header: bytes as latin-1
    for path in (f"/api/v1/batch-jobs/{job.pk}", f"/api/v1/batch-jobs/{job.pk}/cancel"):
        call = api.post if path.endswith("cancel") else api.get
        error_of(call(path, headers={"X-Job-Token": header}), 404)


@pytest.mark.parametrize("token", ["jöb", "\u00e9" * 32, "€"])
def test_a_job_token_in_the_url_is_a_400_whatever_it_holds(
    api: APIClient, demo_registry: MLRegistry, settings: Any, tmp_path: Path, token: str
) -> None:
    # Tokens are taken from the header only (they do not belong in access logs): a
    # ?token= is refused before it is read, whatever its characters.
    use_job_storage(settings, tmp_path / "jobs")
    job = job_in("queued")
    for path in (f"/api/v1/batch-jobs/{job.pk}", f"/api/v1/batch-jobs/{job.pk}/cancel"):
        call = api.post if path.endswith("cancel") else api.get
        error = error_of(call(f"{path}?{urlencode({'token': token})}"), 400)
        assert "X-Job-Token" in error["message"]


def test_a_lone_surrogate_in_a_body_is_a_400(api: APIClient, demo_registry: MLRegistry) -> None:
    for body in ('{"\\udfff": 1}', '{"age": "\\ud800"}'):
        error = error_of(api.post(PREDICT, body, content_type="application/json"), 400)
        assert "surrogate" in error["message"]
    assert MLRequest.objects.count() == 0


def test_a_cursor_that_is_not_one_of_ours_is_a_404(demo_registry: MLRegistry) -> None:
    client = APIClient()
    client.force_authenticate(operator())
    for position in (b"p=abc", b"p=", b"o=-1&p=1", b"r=1&p=1e9"):
        cursor = base64.b64encode(position).decode()
        error = error_of(client.get(f"/api/v1/mlrequests?cursor={cursor}"), 404)
        assert error["code"] == "not_found"


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "1_000", "\u0663\u0667"])
def test_ids_in_the_log_filters_are_ascii_digits(demo_registry: MLRegistry, value: str) -> None:
    client = APIClient()
    client.force_authenticate(operator())
    for name in ("ab_test", "algorithm"):
        error = error_of(client.get(f"/api/v1/mlrequests?{name}={value}"), 400)
        assert name in error["details"]


@pytest.mark.parametrize("value", ["1_000", "\u0663\u0667", "\uff13\uff17", "0x1A", " 37 "])
def test_a_number_is_ascii_decimal_notation(
    api: APIClient, demo_registry: MLRegistry, value: str
) -> None:
    record = {**SAMPLE_RECORD, "age": value}
    if value.strip() == "37":
        response = api.post(PREDICT, record, format="json")  # spaces around are allowed
        assert response.status_code == 200, response.content
        return
    error = error_of(api.post(PREDICT, record, format="json"), 400)
    assert "age" in error["details"]


@pytest.mark.parametrize("term", ["\u00b2", "9" * 30])
def test_the_admins_search_by_id_takes_ids_only(demo_registry: MLRegistry, term: str) -> None:
    from django.test import Client

    client = Client()
    client.force_login(operator())
    response = client.get("/admin/endpoints/mlrequest/", {"q": term})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []
