"""Every class of error answers the one documented shape, as JSON:
``{"error": {"code": str, "message": str, "details"?: ...}}`` with no traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.db import OperationalError
from rest_framework.test import APIClient

from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db
PREDICT = "/api/v1/income_classifier/predict"


def _post(api: APIClient, body: Any = SAMPLE_RECORD, **extra: Any) -> Any:
    return api.post(PREDICT, data=json.dumps(body), content_type="application/json", **extra)


def _throttled(api: APIClient) -> Any:
    from django.core.cache import cache
    from rest_framework.throttling import ScopedRateThrottle

    cache.clear()
    with mock.patch.object(ScopedRateThrottle, "THROTTLE_RATES", {"predict": "1/minute"}):
        _post(api)
        return _post(api)


def _database_down(api: APIClient) -> Any:
    with mock.patch("apps.endpoints.views.predict.predict", side_effect=OperationalError("gone")):
        return _post(api)


CASES: dict[str, tuple[Callable[[APIClient], Any], int, str]] = {
    "validation": (lambda api: _post(api, {**SAMPLE_RECORD, "age": "old"}), 400, "invalid_input"),
    "parse": (
        lambda api: api.post(PREDICT, data="{nope", content_type="application/json"),
        400,
        "parse_error",
    ),
    "not found": (lambda api: api.get("/api/v1/endpoints/999999"), 404, "not_found"),
    "unknown route": (lambda api: api.get("/api/v1/nothing-here"), 404, "not_found"),
    "method": (lambda api: api.get(PREDICT), 405, "method_not_allowed"),
    "not acceptable": (
        lambda api: _post(api, HTTP_ACCEPT="application/xml"),
        406,
        "not_acceptable",
    ),
    "media type": (
        lambda api: api.post(PREDICT, data="<a/>", content_type="application/xml"),
        415,
        "unsupported_media_type",
    ),
    "not authenticated": (lambda api: api.get("/api/v1/mlrequests"), 401, "not_authenticated"),
    "too large": (
        lambda api: _post(api, {**SAMPLE_RECORD, "pad": "x" * 300_000}),
        413,
        "too_large",
    ),
    "throttled": (_throttled, 429, "throttled"),
    "unavailable": (_database_down, 503, "database_unavailable"),
}


@pytest.mark.parametrize("case", CASES)
def test_every_error_class_answers_the_one_shape(
    case: str, api: APIClient, demo_registry: MLRegistry
) -> None:
    make, status, code = CASES[case]
    response = make(api)
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) <= {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]


def test_a_server_error_is_json_without_a_traceback_and_logged_with_the_request_id(
    demo_registry: MLRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    api = APIClient(raise_request_exception=False)
    with mock.patch(
        "apps.endpoints.views.predict.predict", side_effect=RuntimeError("secret detail")
    ):
        with caplog.at_level(logging.ERROR):
            response = _post(api, HTTP_X_REQUEST_ID="req-500-test")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "server_error"
    assert b"secret detail" not in response.content and b"Traceback" not in response.content
    assert response["X-Request-ID"] == "req-500-test"
    logged = [r for r in caplog.records if r.exc_info and "secret detail" in str(r.exc_info[1])]
    assert logged, "the 500 is logged with its exception"
    assert any(getattr(r, "request_id", None) == "req-500-test" for r in logged)


def test_an_error_lists_the_first_problems_and_counts_the_rest(
    api: APIClient, demo_registry: MLRegistry, settings: Any
) -> None:
    """Regression: a 220 KB body of 25k unknown keys got a 5 MB 400, one entry per key."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
    body = {**SAMPLE_RECORD, **{f"k{i}": 1 for i in range(25_000)}}
    response = _post(api, body)
    assert response.status_code == 400
    assert len(response.content) < 20_000, len(response.content)
    error = response.json()["error"]
    assert len(error["details"]) == 50
    assert error["details_omitted"] == 24_950
    assert all(key.startswith("k") for key in error["details"])  # the first problems shown
