"""The design's selection rules for predict, tested without HTTP."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from apps.core.errors import (
    AlgorithmNotFound,
    AmbiguousAlgorithm,
    EndpointNotFound,
    InvalidInput,
)
from apps.endpoints.catalogue.selectors import forget_selections
from apps.endpoints.catalogue.statuses import set_algorithm_status
from apps.endpoints.models import MLAlgorithm, MLRequest
from apps.endpoints.serving import predict as serving
from apps.endpoints.serving.predict import ServedPrediction
from apps.endpoints.tests.factories import algorithm
from apps.ml.income_classifier import IncomeClassifier
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db


def predict(status: str, version: str | None = None, **kw: object) -> ServedPrediction:
    [served] = serving.predict(
        endpoint_name="income_classifier",
        records=[SAMPLE_RECORD],
        status=status,
        version=version,
        **kw,  # type: ignore[arg-type]
    )
    return served


def test_the_algorithm_with_the_status_serves(registry: MLRegistry) -> None:
    production = algorithm(registry, status="production")
    algorithm(registry, name="extra trees", status="testing", artifact="extra_trees.joblib")
    assert predict("production")["algorithm"]["id"] == production.pk


def test_version_narrows_the_choice(registry: MLRegistry) -> None:
    algorithm(registry, version="1")
    second = algorithm(registry, version="2")
    assert predict("production", version="2")["algorithm"]["id"] == second.pk


def test_several_matches_ask_for_a_version_and_list_the_candidates(registry: MLRegistry) -> None:
    first, second = algorithm(registry, version="1"), algorithm(registry, version="2")
    with pytest.raises(AmbiguousAlgorithm) as caught:
        predict("production")
    assert [c["id"] for c in caught.value.details["candidates"]] == [first.pk, second.pk]
    assert caught.value.status_code == 400
    assert MLRequest.objects.count() == 0


def test_without_a_running_test_ab_testing_picks_an_arm_with_the_injected_rng(
    registry: MLRegistry,
) -> None:
    first = algorithm(registry, version="1", status="ab_testing")
    second = algorithm(registry, version="2", status="ab_testing")
    seen: list[list[int]] = []

    class LastChoice(random.Random):
        def choice(self, seq: Sequence[MLAlgorithm]) -> MLAlgorithm:  # type: ignore[override]
            seen.append([c.pk for c in seq])
            return seq[-1]

    assert predict("ab_testing", rng=LastChoice())["algorithm"]["id"] == second.pk
    assert seen == [[first.pk, second.pk]]
    row = MLRequest.objects.get()
    assert row.parent_mlalgorithm_id == second.pk and row.ab_test is None


def test_ab_testing_splits_traffic_between_both_arms_at_random(registry: MLRegistry) -> None:
    arms = {algorithm(registry, version=v, status="ab_testing").pk for v in ("1", "2")}
    served = {predict("ab_testing")["algorithm"]["id"] for _ in range(40)}
    assert served == arms  # (1/2)^39 chance of a false failure


def test_an_inactive_status_does_not_count(registry: MLRegistry) -> None:
    alg = algorithm(registry, status="production")
    set_algorithm_status(algorithm=alg, status="testing", created_by="tests")
    with pytest.raises(AlgorithmNotFound):
        predict("production")
    assert predict("testing")["algorithm"]["id"] == alg.pk


def test_unknown_endpoint_status_and_version_are_distinct_errors(registry: MLRegistry) -> None:
    algorithm(registry)
    with pytest.raises(EndpointNotFound):
        serving.predict(endpoint_name="nope", records=[SAMPLE_RECORD], status="production")
    with pytest.raises(AlgorithmNotFound, match="version '9'"):
        predict("production", version="9")
    with pytest.raises(InvalidInput, match="'retired' is not a status"):
        predict("retired")


def test_each_prediction_is_logged_as_json(registry: MLRegistry) -> None:
    served = predict("production") if algorithm(registry) else None
    assert served is not None
    row = MLRequest.objects.get(pk=served["request_id"])
    assert row.input_data == SAMPLE_RECORD
    assert row.full_response == {
        k: served[k] for k in ("label", "probability", "probabilities", "status", "imputed")
    }
    assert isinstance(row.full_response["probability"], float)
    assert row.response == served["label"]
    assert row.feedback is None


def test_a_batch_is_one_model_call_and_a_constant_number_of_queries(registry: MLRegistry) -> None:
    alg = algorithm(registry)
    wrapper = registry.get(alg)
    assert isinstance(wrapper, IncomeClassifier)
    calls: list[int] = []
    original = wrapper.predict_proba

    def counting(matrix: np.ndarray) -> np.ndarray:
        calls.append(len(matrix))
        return original(matrix)

    wrapper.predict_proba = counting  # type: ignore[method-assign]  # counts the model's calls
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for n in (25, 3):
        # select the algorithm; savepoint, reserve ids, insert all rows (COPY on
        # PostgreSQL, which the query log does not show), release
        with CaptureQueriesContext(connection) as queries:
            serving.predict(
                endpoint_name="income_classifier", records=[SAMPLE_RECORD] * n, status="production"
            )
        counts.append(len(queries))
    assert counts[0] == counts[1] <= 5
    assert calls == [25, 3]
    assert MLRequest.objects.count() == 28
    assert len(set(MLRequest.objects.values_list("pk", flat=True))) == 28


def test_a_single_prediction_costs_two_queries(
    registry: MLRegistry, django_assert_num_queries: Any
) -> None:
    algorithm(registry)
    registry.get(MLAlgorithm.objects.get())  # loaded, as in a warm worker
    # Select the algorithm, INSERT ... RETURNING, and look for the endpoint's shadow.
    with django_assert_num_queries(3):
        [served] = serving.predict(
            endpoint_name="income_classifier", records=[SAMPLE_RECORD], status="production"
        )
    row = MLRequest.objects.get(pk=served["request_id"])
    assert row.input_data == SAMPLE_RECORD and row.response == served["label"]


def test_a_warm_worker_predicts_with_one_query(
    registry: MLRegistry, settings: Any, django_assert_num_queries: Any
) -> None:
    """With the selections cached (PREDICT_CACHE_SECONDS, 1 s by default) the algorithm and
    the shadow are known: the log's INSERT is the only query."""
    settings.PREDICT_CACHE_SECONDS = 60
    algorithm(registry)
    for _ in range(2):  # the first fills the caches
        with django_assert_num_queries(1 if _ else 3):
            serving.predict(
                endpoint_name="income_classifier", records=[SAMPLE_RECORD], status="production"
            )


def test_invalid_input_logs_nothing(registry: MLRegistry) -> None:
    algorithm(registry)
    with pytest.raises(InvalidInput):
        serving.predict(
            endpoint_name="income_classifier",
            records=[dict(SAMPLE_RECORD, age="x")],
            status="production",
        )
    assert MLRequest.objects.count() == 0


def test_selections_are_cached_for_the_ttl_and_cleared_by_status_changes(
    registry: MLRegistry, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from apps.endpoints.models import MLAlgorithmStatus

    settings.PREDICT_CACHE_SECONDS = 5
    forget_selections()
    try:
        alg = algorithm(registry, status="production")
        assert predict("production")["algorithm"]["id"] == alg.pk
        # Another worker demotes it behind this process's back: cached until the TTL ends.
        MLAlgorithmStatus.objects.filter(parent_mlalgorithm=alg).update(status="testing")
        assert predict("production")["algorithm"]["id"] == alg.pk
        later = time.monotonic() + 6
        monkeypatch.setattr(time, "monotonic", lambda: later)  # the selectors' clock
        with pytest.raises(AlgorithmNotFound):
            predict("production")
        monkeypatch.undo()
        predict("testing")  # cached now
        # A change through the service in this process is seen at once.
        set_algorithm_status(algorithm=alg, status="staging", created_by="t")
        with pytest.raises(AlgorithmNotFound):
            predict("testing")
    finally:
        forget_selections()
