"""Prometheus metrics, with the official ``prometheus_client``.

Two kinds:

- Counted as traffic flows, in this process: requests and their latency by view, errors by
  code, predictions by endpoint, algorithm, version and status. Under gunicorn, set
  ``PROMETHEUS_MULTIPROC_DIR`` (``server/gunicorn.conf.py`` does) so the workers write
  them to files there and a scrape of any worker adds up all of them.
- Read from the database at scrape time: feedback received per algorithm, and its running
  accuracy (classifiers) or mean absolute error (regressors). They are the same whichever
  worker answers, and survive restarts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from django.db import DatabaseError
from django.db.models import Count, F, Q, Sum
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from apps.endpoints import selectors
from apps.endpoints.models import MLAlgorithm, MLRequest, Task

logger = logging.getLogger(__name__)

# From a one-row prediction (milliseconds) to a large batch (tens of seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUEST_LATENCY = Histogram(
    "ml_http_request_duration_seconds",
    "Time to answer a request, by view (e.g. predict, a batch view) and method.",
    ["view", "method"],
    buckets=LATENCY_BUCKETS,
)
ERRORS = Counter("ml_http_errors", "Error answers by view and error code.", ["view", "code"])
PREDICTIONS = Counter(
    "ml_predictions",
    "Records predicted, by endpoint, algorithm, version and the status it was selected by.",
    ["endpoint", "algorithm", "version", "status"],
)


def count_predictions(*, endpoint: str, algorithm: MLAlgorithm, status: str, records: int) -> None:
    PREDICTIONS.labels(
        endpoint=endpoint, algorithm=algorithm.name, version=algorithm.version, status=status
    ).inc(records)


def count_batch_predictions(
    *, endpoint: str, algorithms: Sequence[MLAlgorithm], arms: np.ndarray, status: str
) -> None:
    """A batch's rows by the algorithm that scored them (``arms`` indexes ``algorithms``)."""
    for arm, count in enumerate(np.bincount(arms, minlength=len(algorithms)).tolist()):
        if count:
            count_predictions(
                endpoint=endpoint, algorithm=algorithms[arm], status=status, records=count
            )


class FeedbackCollector:
    """Feedback counts per algorithm, with accuracy (classifiers) or mean absolute error
    (regressors); two aggregate queries per scrape."""

    def collect(self) -> Iterable[Metric]:
        labels = ["endpoint", "algorithm", "version"]
        received = CounterMetricFamily(
            "ml_feedback", "Logged predictions that received feedback.", labels=labels
        )
        correct = CounterMetricFamily(
            "ml_feedback_correct", "Feedback equal to the predicted label.", labels=labels
        )
        accuracy = GaugeMetricFamily(
            "ml_running_accuracy",
            "Classifiers: share of feedback equal to the predicted label.",
            labels=labels,
        )
        mae = GaugeMetricFamily(
            "ml_running_mae",
            "Regressors: mean absolute error of the predictions with feedback.",
            labels=labels,
        )
        try:
            classified, regressed = _feedback_rows()
        except DatabaseError as exc:  # a scrape must not fail while the database is down
            logger.warning("Feedback metrics skipped: %s", exc)
            return []
        for row in classified:
            values = _labels(row)
            received.add_metric(values, row["n"])
            correct.add_metric(values, row["right"])
            accuracy.add_metric(values, row["right"] / row["n"])
        for row in regressed:
            values = _labels(row)
            received.add_metric(values, row["n"])
            mae.add_metric(values, row["error"] / row["n"])
        return [received, correct, accuracy, mae]


_GROUP = (
    "parent_mlalgorithm__parent_endpoint__name",
    "parent_mlalgorithm__name",
    "parent_mlalgorithm__version",
)


def _labels(row: dict[str, Any]) -> list[str]:
    return [str(row[key]) for key in _GROUP]


def _feedback_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per algorithm with feedback: classifiers' counts of right answers, regressors' sums
    of absolute errors (their answers and feedback are numbers as text)."""
    given = MLRequest.objects.filter(feedback__isnull=False).order_by()
    classified = list(
        given.exclude(parent_mlalgorithm__task=Task.REGRESSION)
        .values(*_GROUP)
        .annotate(n=Count("id"), right=Count("id", filter=Q(feedback=F("response"))))
    )
    regressed = list(
        given.filter(parent_mlalgorithm__task=Task.REGRESSION)
        .values(*_GROUP)
        .annotate(n=Count("id"), error=Sum(selectors.absolute_error()))
    )
    return classified, regressed


def scrape_registry() -> CollectorRegistry:
    """What ``/metrics`` exposes: this process's metrics (or, in multiprocess mode, every
    worker's), plus the feedback metrics from the database."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
    else:
        registry.register(REGISTRY)
    registry.register(FeedbackCollector())
    return registry
