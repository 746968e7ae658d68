"""POST /api/v1/<endpoint_name>/predict over HTTP: answers, logging and every bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.endpoints.models import MLRequest
from apps.endpoints.serving import feedback
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db
URL = "/api/v1/income_classifier/predict"


def post_json(api: APIClient, body: Any, url: str = URL) -> Any:
    return api.post(url, data=json.dumps(body), content_type="application/json")


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


def test_the_sample_record_gets_a_prediction_and_a_request_id(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    response = post_json(api, SAMPLE_RECORD)
    assert response.status_code == 200
    body = response.json()
    assert body["label"] in {"<=50K", ">50K"} and body["status"] == "OK"
    assert body["algorithm"]["name"] == "random forest"  # production by default
    row = MLRequest.objects.get(pk=body["request_id"])
    assert row.input_data == SAMPLE_RECORD and row.response == body["label"]


def test_a_warm_prediction_over_http_is_one_statement_the_insert(
    api: APIClient, demo_registry: MLRegistry, settings: Any
) -> None:
    # The round trips to the database are most of what PostgreSQL adds to a prediction
    # (bench/predict_bench.py --postgres-settings): the algorithm's selection is cached,
    # nothing reads a session or a user for an anonymous client, and the row is one
    # INSERT ... RETURNING in autocommit, no transaction around it. (Django's health
    # check of a kept connection, one SELECT 1 per request, is not in this log.)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.PREDICT_CACHE_SECONDS = 5  # as in production (the tests' default is 0)
    assert post_json(api, SAMPLE_RECORD).status_code == 200  # the selection is cached
    with CaptureQueriesContext(connection) as queries:
        assert post_json(api, SAMPLE_RECORD).status_code == 200
    [insert] = [q["sql"] for q in queries.captured_queries]
    assert insert.startswith("INSERT INTO") and "RETURNING" in insert


def test_status_and_version_select_the_algorithm(api: APIClient, demo_registry: MLRegistry) -> None:
    body = post_json(api, SAMPLE_RECORD, URL + "?status=testing&version=0.0.1").json()
    assert body["algorithm"]["name"] == "extra trees"


def test_form_encoded_records_are_accepted(api: APIClient, demo_registry: MLRegistry) -> None:
    response = api.post(URL, data={k: str(v) for k, v in SAMPLE_RECORD.items()})
    assert response.status_code == 200, response.content
    as_json = post_json(api, SAMPLE_RECORD).json()
    assert response.json() == {
        **as_json,
        "request_id": response.json()["request_id"],
        "feedback_token": feedback.token_for(response.json()["request_id"]),
    }
    assert response.json()["request_id"] != as_json["request_id"]


def test_a_wrong_type_is_a_400_naming_the_field(api: APIClient, demo_registry: MLRegistry) -> None:
    error = assert_error(post_json(api, dict(SAMPLE_RECORD, age="abc")), 400, "invalid_input")
    assert error["details"] == {"age": ["A number is required, got 'abc'."]}
    error = assert_error(post_json(api, dict(SAMPLE_RECORD, age={"x": 1})), 400, "invalid_input")
    assert list(error["details"]) == ["age"]
    assert MLRequest.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('{"age": ', "parse_error"),
        ("[1, 2]", "invalid_input"),
        ('"a string"', "invalid_input"),
        ("{}", "invalid_input"),
        ("[" * 100_000 + "]" * 100_000, "parse_error"),
        ('{"age": NaN}', "parse_error"),
    ],
)
def test_malformed_bodies_are_400s(
    api: APIClient, demo_registry: MLRegistry, body: str, code: str
) -> None:
    assert_error(api.post(URL, data=body, content_type="application/json"), 400, code)
    assert MLRequest.objects.count() == 0


def test_an_unsupported_media_type_is_a_415(api: APIClient, demo_registry: MLRegistry) -> None:
    assert_error(api.post(URL, data="x", content_type="text/plain"), 415, "unsupported_media_type")


def test_unknown_endpoint_version_and_status(api: APIClient, demo_registry: MLRegistry) -> None:
    assert_error(post_json(api, SAMPLE_RECORD, "/api/v1/nope/predict"), 404, "endpoint_not_found")
    assert_error(post_json(api, SAMPLE_RECORD, URL + "?version=9"), 404, "algorithm_not_found")
    error = assert_error(post_json(api, SAMPLE_RECORD, URL + "?status=gone"), 400, "invalid_input")
    assert "status" in error["details"]


def test_an_empty_object_is_judged_by_the_endpoint_it_is_sent_to(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    """It was refused as "the body is empty" before the endpoint was looked up, so an
    unknown endpoint answered 400 instead of 404 (found trying the service as a new user)."""
    assert_error(post_json(api, {}, "/api/v1/nope/predict"), 404, "endpoint_not_found")
    error = assert_error(post_json(api, {}), 400, "invalid_input")
    assert error["message"].startswith("The body is empty")
    assert MLRequest.objects.count() == 0


def test_ambiguity_is_a_400_listing_the_candidates(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    from apps.endpoints.catalogue.statuses import set_algorithm_status
    from apps.endpoints.models import MLAlgorithm

    set_algorithm_status(
        algorithm=MLAlgorithm.objects.get(name="extra trees"), status="production", created_by="t"
    )
    error = assert_error(post_json(api, SAMPLE_RECORD), 400, "ambiguous_algorithm")
    assert {c["name"] for c in error["details"]["candidates"]} == {"random forest", "extra trees"}


def test_a_tampered_artifact_is_a_503_for_that_algorithm_only(
    api: APIClient, demo_registry: MLRegistry, artifacts_dir: Path
) -> None:
    from apps.ml.registry import MLRegistry, set_registry

    path = artifacts_dir / "random_forest.joblib"  # registered, this process fresh
    path.write_bytes(path.read_bytes() + b"tampered")
    previous = set_registry(MLRegistry(artifacts_dir))
    try:
        error = assert_error(post_json(api, SAMPLE_RECORD), 503, "model_unavailable")
        assert "sha256" in error["message"]
        assert post_json(api, SAMPLE_RECORD, URL + "?status=testing").status_code == 200
    finally:
        set_registry(previous)


def test_unknown_routes_and_methods_answer_json(api: APIClient, demo_registry: MLRegistry) -> None:
    assert_error(api.get("/no/such/route"), 404, "not_found")
    assert_error(api.get(URL), 405, "method_not_allowed")


def test_the_browsable_api_renders_the_predict_form(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    response = api.get(URL, HTTP_ACCEPT="text/html")
    assert response.status_code == 405
    assert b"<html" in response.content.lower()


def test_a_body_over_the_limit_is_a_413_not_a_500(
    api: APIClient, demo_registry: MLRegistry, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps(dict(SAMPLE_RECORD, occupation="x" * 20_000))
    error = assert_error(
        api.post(URL, data=body, content_type="application/json"), 413, "too_large"
    )
    assert "10000 bytes" in error["message"]
    assert MLRequest.objects.count() == 0


def test_django_level_errors_answer_json_too(client: Any, settings: Any) -> None:
    from django.test import Client

    settings.ALLOWED_HOSTS = ["localhost"]
    response = Client(HTTP_HOST="evil.example").get("/api/v1/endpoints")
    assert_error(response, 400, "bad_request")


def test_the_browsable_predict_page_starts_from_an_example_and_shows_docstrings_as_text(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    # Seen in Chromium: the page showed the docstring's ``double backticks`` literally, and
    # its content box was empty, so a person had nothing to start from.
    from apps.endpoints.models import MLAlgorithm

    page = api.get(URL, HTTP_ACCEPT="text/html")
    assert page.status_code == 405  # GET is not allowed, but the page is what a person sees
    html = page.content.decode()
    assert "``" not in html
    assert "<code>POST /api/v1/&lt;endpoint_name&gt;/predict?status=&amp;version=</code>" in html
    [example, *_] = MLAlgorithm.objects.get(name="random forest").example
    box = html.split('name="_content"', 1)[1].split("</textarea>", 1)[0]
    shown = json.loads(box.split(">", 1)[1].replace("&quot;", '"'))
    assert shown == example and "age" in shown
    # The record shown is one the endpoint answers as it is.
    assert post_json(api, shown).status_code == 200
