"""The OpenAPI schema describes every route as it behaves."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from apps.ml.income_classifier import schema as adult
from apps.ml.registry import MLRegistry


@pytest.fixture(scope="module")
def spec(django_db_blocker: Any) -> dict[str, Any]:
    with django_db_blocker.unblock():
        return endpoint_spec(APIClient())


@pytest.mark.django_db
def test_the_schema_generates_without_warnings(all_demos: MLRegistry) -> None:
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=io.StringIO())


def endpoint_spec(api: APIClient) -> dict[str, Any]:
    response = api.get("/api/v1/schema", {"format": "json"})
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


@pytest.mark.django_db
def test_each_endpoint_has_a_predict_path_with_its_own_signature(
    api: APIClient, all_demos: MLRegistry
) -> None:
    spec = endpoint_spec(api)
    schemas = spec["components"]["schemas"]
    income = spec["paths"]["/api/v1/income_classifier/predict"]["post"]
    assert income["operationId"] == "predict_income_classifier"
    record = schemas["income_classifier.Record"]
    assert list(record["properties"]) == list(adult.FEATURES)
    assert record["properties"]["age"] == {"type": "number", "nullable": True}
    assert set(record["properties"]["workclass"]["enum"]) == set(
        adult.CATEGORY_DOMAINS["workclass"]
    )
    assert "required" not in record  # every Adult feature may be missing (imputed)
    answer = schemas["income_classifier.Prediction"]["properties"]
    assert answer["label"]["enum"] == ["<=50K", ">50K"] and "imputed" in answer
    wine = schemas["wine_cultivar.Record"]
    assert len(wine["required"]) == 13 and wine["properties"]["alcohol"] == {"type": "number"}
    example = spec["paths"]["/api/v1/wine_cultivar/predict"]["post"]["requestBody"]
    assert set(example["content"]["application/json"]["example"]) == set(wine["properties"])
    diabetes = schemas["diabetes_progression.Prediction"]["properties"]
    assert "prediction" in diabetes and "label" not in diabetes
    for name in ("income_classifier", "wine_cultivar", "diabetes_progression"):
        closed = schemas[f"{name}.Record"]
        assert closed["additionalProperties"] is False and closed["minProperties"] == 1
        post = spec["paths"][f"/api/v1/{name}/predict"]["post"]
        assert "endpoint_name" not in {p["name"] for p in post["parameters"]}
        assert {p["name"] for p in post["parameters"]} >= {"status", "version", "X-Assignment-Key"}
        assert post["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]


def test_the_templated_predict_path_documents_any_endpoint(spec: dict[str, Any]) -> None:
    post = spec["paths"]["/api/v1/{endpoint_name}/predict"]["post"]
    assert {"application/json", "application/x-www-form-urlencoded"} <= set(
        post["requestBody"]["content"]
    )
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["type"] == "object" and body["minProperties"] == 1
    assert {p["name"] for p in post["parameters"]} >= {
        "endpoint_name",
        "status",
        "version",
        "X-Assignment-Key",
    }


def test_errors_are_documented_in_the_one_shape(spec: dict[str, Any]) -> None:
    post = spec["paths"]["/api/v1/{endpoint_name}/predict"]["post"]
    for code in ("400", "404", "503"):
        ref = post["responses"][code]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorSchema")
    body = spec["components"]["schemas"]["ErrorBodySchema"]["properties"]
    assert set(body) == {"code", "message", "details"}


def test_the_batch_upload_is_multipart_with_a_file(spec: dict[str, Any]) -> None:
    post = spec["paths"]["/api/v1/batch-predict"]["post"]
    form = post["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]
    file_field = spec["components"]["schemas"][form]["properties"]["file"]
    assert file_field["format"] == "binary"
    assert {"application/json", "text/csv"} <= set(post["responses"]["200"]["content"])


@pytest.mark.django_db
def test_swagger_ui_is_served_without_a_cdn(api: APIClient) -> None:
    page = api.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger" in html.lower() and "cdn.jsdelivr" not in html


def test_every_operation_documents_the_errors_around_its_view(spec: dict[str, Any]) -> None:
    # What the fuzzer (.ci/fuzz) receives besides successes: each in the one error shape.
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            expected = {"401", "404", "406", "503"}
            if method in ("post", "put", "patch"):
                expected |= {"400", "403", "413", "415"}
            responses = operation["responses"]
            assert expected <= set(responses), (method, path, sorted(responses))
            for code in expected:
                content = responses[code]["content"]
                assert list(content) == ["application/json"], (method, path, code)
                # The Open Inference Protocol's routes answer in its own shape.
                shape = "/V2ErrorSchema" if path.startswith("/v2") else "/ErrorSchema"
                assert content["application/json"]["schema"]["$ref"].endswith(shape)
                assert responses[code]["description"]
            for code in ("414", "431"):  # gunicorn's own pages
                assert list(responses[code]["content"]) == ["text/html"], (method, path, code)
    assert "429" in spec["paths"]["/api/v1/abtests"]["post"]["responses"]  # throttled
    # any route: a login locked out (apps/endpoints/login_attempts.py)
    assert (
        "locked_out" in spec["paths"]["/api/v1/endpoints"]["get"]["responses"]["429"]["description"]
    )
    assert "409" in spec["paths"]["/api/v1/stop_ab_test/{abtest_id}"]["post"]["responses"]
    infer = spec["paths"]["/v2/models/{model_name}/infer"]["post"]["responses"]
    assert infer["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/V2ErrorSchema")


def test_a_logged_request_without_a_user_conforms_to_the_schema(spec: dict[str, Any]) -> None:
    # Found by the fuzzer: anonymous requests have user null, and the schema said string.
    user = spec["components"]["schemas"]["MLRequest"]["properties"]["user"]
    assert user["type"] == "string" and user.get("nullable") is True
