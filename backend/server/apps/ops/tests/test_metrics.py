"""/metrics: Prometheus text whose counters move with traffic, read in one query, behind
METRICS_TOKEN when it is set."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from django.db import OperationalError
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from apps.endpoints.models import MLAlgorithm
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db

PREDICT = "/api/v1/income_classifier/predict"
FOREST = {"endpoint": "income_classifier", "algorithm": "random forest", "version": "0.0.1"}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(api: APIClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }


def test_predictions_are_counted_by_endpoint_algorithm_version_and_status(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    labels = {**FOREST, "status": "production"}
    before = value("ml_predictions_total", **labels)
    for _ in range(3):
        assert api.post(PREDICT, SAMPLE_RECORD, format="json").status_code == 200
    assert value("ml_predictions_total", **labels) == before + 3
    assert scrape(api)[("ml_predictions_total", tuple(sorted(labels.items())))] == before + 3


def test_predict_latency_is_a_histogram_labelled_by_view(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    before = value("ml_http_request_duration_seconds_count", view="predict", method="POST")
    api.post(PREDICT, SAMPLE_RECORD, format="json")
    after = value("ml_http_request_duration_seconds_count", view="predict", method="POST")
    assert after == before + 1
    assert (
        value("ml_http_request_duration_seconds_bucket", view="predict", method="POST", le="+Inf")
        == after
    )


def test_errors_are_counted_by_their_code(api: APIClient, demo_registry: MLRegistry) -> None:
    invalid = {"view": "predict", "code": "invalid_input"}
    missing = {"view": "unmatched", "code": "not_found"}
    before = value("ml_http_errors_total", **invalid), value("ml_http_errors_total", **missing)
    assert api.post(PREDICT, {"age": "abc"}, format="json").status_code == 400
    assert api.get("/no/such/page").status_code == 404
    after = value("ml_http_errors_total", **invalid), value("ml_http_errors_total", **missing)
    assert after == (before[0] + 1, before[1] + 1)


def test_feedback_counts_and_running_accuracy_come_from_the_database(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    served = [api.post(PREDICT, SAMPLE_RECORD, format="json").json() for _ in "abc"]
    first = MLAlgorithm.objects.get(name="random forest").requests.first()
    assert first is not None
    predicted = first.response
    wrong = ">50K" if predicted == "<=50K" else "<=50K"
    for answer, truth in zip(served, [predicted, predicted, wrong], strict=True):
        url = f"/api/v1/mlrequests/{answer['request_id']}"
        body = {"feedback": truth, "feedback_token": answer["feedback_token"]}
        assert api.put(url, body).status_code == 200
    samples = scrape(api)
    key = tuple(sorted(FOREST.items()))
    assert samples[("ml_feedback_total", key)] == 3
    assert samples[("ml_feedback_correct_total", key)] == 2
    assert samples[("ml_running_accuracy", key)] == pytest.approx(2 / 3)


def test_a_scrape_still_answers_while_the_database_is_down(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    failing = mock.patch(
        "apps.endpoints.serving.selectors.FeedbackTally.objects.filter",
        side_effect=OperationalError("down"),
    )
    with failing:
        samples = scrape(api)
    assert not any(name.startswith("ml_feedback") for name, _ in samples)


@pytest.mark.django_db
def test_a_regressors_feedback_gives_its_running_mean_absolute_error(
    api: APIClient, registry: MLRegistry
) -> None:
    import io
    import json as json_module

    import skops.io

    from apps.endpoints.catalogue.register import register_model
    from apps.ml.tests import models

    buffer = io.BytesIO()
    skops.io.dump(models.diabetes_regressor(), buffer)
    buffer.seek(0)
    register_model(
        artifact=buffer, file_name="d.skops", endpoint_name="diabetes", name="gb", version="1",
        status="production",
    )  # fmt: skip
    x, y = models.diabetes()
    errors = []
    for i in range(3):
        record = json_module.loads(x.iloc[[i]].to_json(orient="records"))[0]
        served = api.post("/api/v1/diabetes/predict", record, format="json").json()
        body = {"feedback": str(y[i]), "feedback_token": served["feedback_token"]}
        assert (
            api.put(f"/api/v1/mlrequests/{served['request_id']}", body, format="json").status_code
            == 200
        )
        errors.append(abs(served["prediction"] - y[i]))
    samples = scrape(api)
    key = tuple(sorted({"endpoint": "diabetes", "algorithm": "gb", "version": "1"}.items()))
    assert samples[("ml_feedback_total", key)] == 3
    assert samples[("ml_running_mae", key)] == pytest.approx(sum(errors) / 3)
    assert ("ml_running_accuracy", key) not in samples


def test_a_scrape_reads_the_feedback_tally_in_one_query_not_the_request_log(
    api: APIClient, demo_registry: MLRegistry, django_assert_num_queries: Any
) -> None:
    for _ in range(3):
        answer = api.post(PREDICT, SAMPLE_RECORD, format="json").json()
        url = f"/api/v1/mlrequests/{answer['request_id']}"
        body = {"feedback": ">50K", "feedback_token": answer["feedback_token"]}
        assert api.put(url, body).status_code == 200
    # The tally; batch jobs (twice); the running sequential A/B tests, the running
    # shadows and the serving versions with a drift reference (none: one query each).
    with django_assert_num_queries(6) as queries:
        samples = scrape(api)
    assert not any("endpoints_mlrequest" in q["sql"] for q in queries.captured_queries)
    assert samples[("ml_feedback_total", tuple(sorted(FOREST.items())))] == 3


# -- METRICS_TOKEN -----------------------------------------------------------------------


def test_without_a_metrics_token_a_scrape_needs_no_credentials(
    api: APIClient, settings: Any
) -> None:
    settings.METRICS_TOKEN = ""
    assert api.get("/metrics").status_code == 200
    assert api.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 200


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer wrong-token", "Token s3cret-metrics-token", "s3cret-metrics-token"],
)
def test_with_a_metrics_token_a_scrape_without_it_is_a_401_that_says_what_to_send(
    api: APIClient, settings: Any, authorization: str
) -> None:
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    headers: dict[str, Any] = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = api.get("/metrics", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["code"] == "not_authenticated" and "Bearer" in error["message"]
    assert "ml_" not in response.content.decode()


def test_with_a_metrics_token_a_scrape_that_sends_it_is_answered_from_any_host(
    api: APIClient, settings: Any
) -> None:
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    for scheme in ("Bearer", "bearer"):
        response = api.get(
            "/metrics", HTTP_AUTHORIZATION=f"{scheme} s3cret-metrics-token", HTTP_HOST="10.1.2.3"
        )
        assert response.status_code == 200
        assert "ml_http_errors" in response.content.decode()
    assert api.get("/healthz").status_code == 200  # the probes stay open


def test_the_metrics_token_is_compared_in_constant_time(api: APIClient, settings: Any) -> None:
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    with mock.patch("apps.ops.metrics.hmac.compare_digest", return_value=False) as compare:
        response = api.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics-token")
    assert response.status_code == 401
    compare.assert_called_once_with(b"s3cret-metrics-token", b"s3cret-metrics-token")
