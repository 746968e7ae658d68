"""A request id in the X-Request-ID header and on every log line of the request."""

from __future__ import annotations

import logging

import pytest
from rest_framework.test import APIClient

from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD
from server.request_id import RequestIdFilter


def test_every_response_gets_a_fresh_request_id(api: APIClient) -> None:
    first, second = api.get("/healthz"), api.get("/no/such/page")
    assert len(first["X-Request-ID"]) == 32
    assert first["X-Request-ID"] != second["X-Request-ID"]


def test_a_sane_incoming_request_id_is_kept(api: APIClient) -> None:
    response = api.get("/healthz", HTTP_X_REQUEST_ID="lb-7f3a.2:9")
    assert response["X-Request-ID"] == "lb-7f3a.2:9"


@pytest.mark.parametrize("incoming", ["x" * 200, "evil\nINFO forged line", "", "-start"])
def test_an_unsafe_incoming_request_id_is_replaced(api: APIClient, incoming: str) -> None:
    response = api.get("/healthz", HTTP_X_REQUEST_ID=incoming)
    assert response["X-Request-ID"] != incoming and len(response["X-Request-ID"]) == 32


@pytest.mark.django_db
def test_log_lines_written_during_a_request_carry_its_id(
    api: APIClient, demo_registry: MLRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO):
        response = api.post(
            "/api/v1/income_classifier/predict",
            SAMPLE_RECORD,
            format="json",
            HTTP_X_REQUEST_ID="trace-42",
        )
    assert response["X-Request-ID"] == "trace-42"
    access = [r for r in caplog.records if r.name == "server.access"]
    assert len(access) == 1
    assert access[0].getMessage().startswith('"POST /api/v1/income_classifier/predict" 200 ')
    assert {vars(r)["request_id"] for r in caplog.records} == {"trace-42"}  # set by the filter


def test_the_log_format_puts_the_request_id_on_every_line() -> None:
    from django.conf import settings

    handler = settings.LOGGING["handlers"]["stdout"]
    assert handler["filters"] == ["request_id"] and handler["stream"] == "ext://sys.stdout"
    assert "[%(request_id)s]" in settings.LOGGING["formatters"]["plain"]["format"]
