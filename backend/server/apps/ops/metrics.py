"""What ``/metrics`` exposes, with the official ``prometheus_client``.

Two kinds:

- Counted as traffic flows (``apps/core/telemetry.py``, which the product updates):
  requests and their latency by view, errors by code, predictions by endpoint, algorithm,
  version and status, rows of batch jobs.
- Read from the database at scrape time: each running sequential A/B test's confidence
  sequence and always-valid p-value (``ABTestCollector``); each running shadow's copies
  scored and dropped, agreement and pairs (``ShadowCollector``); each serving version's
  drift, feature by feature (``DriftCollector``); feedback received per
  algorithm, and its running accuracy (classifiers) or mean absolute error (regressors).
  They are the same whichever worker answers, and survive restarts. They come from the
  tallies kept as feedback is written (``apps/endpoints/serving/tally.py``): a few small
  queries per scrape, whatever the size of the request log. Batch jobs by state and the
  pieces waiting to be scored: two more, over the jobs' table (small: a row per job, kept
  ``BATCH_JOB_RETENTION_DAYS``), never over their pieces.

``METRICS_TOKEN``, when set, is the bearer token a scrape must send (``scrape_allowed``),
and the one that reads /readyz's checks (``checks_allowed``).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, F, Sum
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from apps.endpoints.catalogue.statuses import SERVING
from apps.endpoints.experiments import ab_testing
from apps.endpoints.models import ABTest, BatchJob, DriftReference, MLAlgorithm, Shadow, Task
from apps.endpoints.monitoring import selectors as drift
from apps.endpoints.serving.selectors import FeedbackCounts, feedback_counts

logger = logging.getLogger(__name__)


class FeedbackCollector:
    """Feedback counts per algorithm, with accuracy (classifiers) or mean absolute error
    (regressors), from ``source``: the tally by default (one query per scrape);
    bench/metrics_bench.py passes the scan of the request log it replaced."""

    def __init__(self, source: Callable[[], list[FeedbackCounts]] = feedback_counts) -> None:
        self.source = source

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
            rows = self.source()
        except DatabaseError as exc:  # a scrape must not fail while the database is down
            logger.warning("Feedback metrics skipped: %s", exc)
            return []
        for row in rows:
            values = [row.endpoint, row.name, row.version]
            received.add_metric(values, row.given)
            if row.task == Task.REGRESSION:
                mae.add_metric(values, row.absolute_error / row.given)
            else:
                correct.add_metric(values, row.correct)
                accuracy.add_metric(values, row.correct / row.given)
        return [received, correct, accuracy, mae]


class BatchJobCollector:
    """Batch jobs by state (every state, 0 for none): one ``GROUP BY state`` over the jobs'
    table. The pieces of queued and running jobs not scored yet, the queue's depth: each
    such job's ``chunks_total - chunks_done`` (``chunks_done`` moves in the transaction that
    marks a piece done), a sum over the few rows the state index finds; the pieces' table is
    not read."""

    def collect(self) -> Iterable[Metric]:
        by_state = GaugeMetricFamily(
            "ml_batch_jobs",
            "Batch jobs by state (as kept: BATCH_JOB_RETENTION_DAYS).",
            labels=["state"],
        )
        waiting = GaugeMetricFamily(
            "ml_batch_job_pieces_waiting",
            "Pieces of queued and running batch jobs not scored yet (one task each).",
        )
        unfinished = [BatchJob.State.QUEUED, BatchJob.State.RUNNING]
        try:
            counts = dict(BatchJob.objects.order_by().values_list("state").annotate(Count("pk")))
            pieces = BatchJob.objects.filter(state__in=unfinished).aggregate(
                n=Sum(F("chunks_total") - F("chunks_done"))
            )["n"]
        except DatabaseError as exc:  # a scrape must not fail while the database is down
            logger.warning("Batch job metrics skipped: %s", exc)
            return []
        for state in BatchJob.State.values:
            by_state.add_metric([state], counts.get(state, 0))
        waiting.add_metric([], pieces or 0)
        return [by_state, waiting]


class ABTestCollector:
    """Each running sequential A/B test's confidence sequence for the difference (arm 2 -
    arm 1 on its metric) and its always-valid p-value, as the API reads them: valid at
    every scrape. A query for the running tests and one per test (its two tally rows)."""

    def collect(self) -> Iterable[Metric]:
        labels = ["ab_test", "endpoint", "metric"]
        difference = GaugeMetricFamily(
            "ml_ab_test_difference",
            "Running sequential A/B tests: arm 2 - arm 1 (accuracy, or mean absolute error) "
            "and the bounds of its confidence sequence, valid at every look.",
            labels=[*labels, "bound"],
        )
        p_value = GaugeMetricFamily(
            "ml_ab_test_p_value",
            "Running sequential A/B tests: the always-valid p-value (its running minimum).",
            labels=labels,
        )
        feedback = GaugeMetricFamily(
            "ml_ab_test_feedback",
            "Running sequential A/B tests: requests with feedback, both arms together.",
            labels=labels,
        )
        try:
            tests = list(
                ABTest.objects.filter(
                    state=ABTest.State.RUNNING, mode=ABTest.Mode.SEQUENTIAL
                ).select_related("parent_mlalgorithm_1__parent_endpoint", "parent_mlalgorithm_2")
            )
            sequences = [(t, ab_testing.sequence_summary(t)) for t in tests]
        except DatabaseError as exc:  # a scrape must not fail while the database is down
            logger.warning("A/B test metrics skipped: %s", exc)
            return []
        for abtest, sequence in sequences:
            values = [
                str(abtest.pk),
                abtest.parent_mlalgorithm_1.parent_endpoint.name,
                ab_testing.metric_of(abtest),
            ]
            for bound in ("estimate", "lower", "upper"):
                if sequence[bound] is not None:
                    difference.add_metric([*values, bound], sequence[bound])
            p_value.add_metric(values, sequence["p_value"])
            feedback.add_metric(values, sequence["n"])
        return [difference, p_value, feedback]


class ShadowCollector:
    """Each running shadow's counters (one query): copies scored, dropped and failed, its
    agreement with production, and its pairs with feedback. Totals over every process,
    from the shadow's row."""

    def collect(self) -> Iterable[Metric]:
        labels = ["shadow", "endpoint", "candidate"]
        copies = CounterMetricFamily(
            "ml_shadow_copies",
            "Running shadows: copies of predictions by result (scored; dropped, the queue "
            "being full; failed, the candidate raising).",
            labels=[*labels, "result"],
        )
        agreement = GaugeMetricFamily(
            "ml_shadow_agreement",
            "Running shadows: the share of scored copies on which a classifier's shadow gave "
            "production's label, or a regressor's mean of shadow - production.",
            labels=labels,
        )
        pairs = GaugeMetricFamily(
            "ml_shadow_pairs",
            "Running shadows: requests with feedback, each scored for both models.",
            labels=labels,
        )
        try:
            running = list(
                Shadow.objects.filter(state=Shadow.State.RUNNING).select_related(
                    "endpoint", "candidate"
                )
            )
        except DatabaseError as exc:  # a scrape must not fail while the database is down
            logger.warning("Shadow metrics skipped: %s", exc)
            return []
        for shadow in running:
            candidate = f"{shadow.candidate.name} {shadow.candidate.version}"
            values = [str(shadow.pk), shadow.endpoint.name, candidate]
            for result in ("copies", "dropped", "failed"):
                name = "scored" if result == "copies" else result
                copies.add_metric([*values, name], getattr(shadow, result))
            if shadow.copies:
                regression = shadow.candidate.task == Task.REGRESSION
                agreed = shadow.difference if regression else shadow.agreed
                agreement.add_metric(values, agreed / shadow.copies)
            pairs.add_metric(values, shadow.pairs)
        return [copies, agreement, pairs]


class DriftCollector:
    """Each serving version's drift against its reference (docs/drift.md): per feature and
    output, the measures, the thresholds in force, the flag, and the data-quality shares;
    per version, the window's records and how many features drift. The window is shared
    by every process and host (the database), so every host reports the same values:
    aggregate with max(), not sum()."""

    def collect(self) -> Iterable[Metric]:
        version = ["endpoint", "algorithm", "version"]
        feature = [*version, "feature"]
        measures = GaugeMetricFamily(
            "ml_feature_drift",
            "Drift of a feature (or output) against the version's reference: psi; "
            "wasserstein (numbers, over the reference's std) or js (categories, base 2).",
            labels=[*feature, "measure"],
        )
        limits = GaugeMetricFamily(
            "ml_feature_drift_threshold",
            "The threshold in force for ml_feature_drift: the larger of the floor and the "
            "one fitted to the reference.",
            labels=[*feature, "measure"],
        )
        flags = GaugeMetricFamily(
            "ml_feature_drifting",
            "1 when a measure or a data-quality share passed its threshold (and the window "
            "holds DRIFT_MIN_RECORDS records), else 0.",
            labels=feature,
        )
        quality = GaugeMetricFamily(
            "ml_feature_quality",
            "Data quality in the window: the share of records with the feature missing, an "
            "unseen category, a refused value (invalid), or a number out of the reference's "
            "range; reference_missing: the reference's missing share.",
            labels=[*feature, "share"],
        )
        records = GaugeMetricFamily(
            "ml_drift_window_records",
            "Records in the version's drift window (at most DRIFT_WINDOW).",
            labels=version,
        )
        drifting = GaugeMetricFamily(
            "ml_drifting_features", "Features and outputs that drift.", labels=version
        )
        try:
            versions = list(
                MLAlgorithm.objects.filter(
                    statuses__active=True,
                    statuses__status__in=sorted(SERVING),
                    pk__in=DriftReference.objects.filter(replaced_at__isnull=True).values(
                        "algorithm_id"
                    ),
                ).select_related("parent_endpoint")
            )
            found = [drift.version_drift(algorithm) for algorithm in versions]
        except DatabaseError as exc:  # a scrape must not fail while the database is down
            logger.warning("Drift metrics skipped: %s", exc)
            return []
        for result in found:
            algorithm = result.algorithm
            values = [algorithm.parent_endpoint.name, algorithm.name, algorithm.version]
            records.add_metric(values, result.records)
            drifting.add_metric(values, len(result.drifting))
            for item in result.features:
                named = [*values, item.name]
                flags.add_metric(named, 1.0 if item.drifting else 0.0)
                for measure, value in item.measures.items():
                    if value is not None:
                        measures.add_metric([*named, measure], value)
                        limits.add_metric([*named, measure], item.thresholds[measure])
                for share, value in item.shares.items():
                    if value is not None:
                        quality.add_metric([*named, share], value)
        return [measures, limits, flags, quality, records, drifting]


def scrape_allowed(authorization: str) -> bool:
    """Whether a scrape with this ``Authorization`` header may read /metrics: always when
    ``METRICS_TOKEN`` is unset, else only with ``Bearer <METRICS_TOKEN>``. Compared in
    constant time, so that timing does not reveal how much of a guess was right."""
    token: str = settings.METRICS_TOKEN
    if not token:
        return True
    return _bearer(authorization, token)


def checks_allowed(authorization: str) -> bool:
    """Whether a /readyz caller may read what the checks found (the versions, the worker's
    pid, the problems): with ``METRICS_TOKEN`` set, only with ``Bearer <METRICS_TOKEN>``;
    unset, only with DEBUG on (``make run``): in production, nobody, since there is no
    token to ask for. /metrics stays open without a token, as it was documented to be;
    /readyz was not, and load balancers need only its status code."""
    token: str = settings.METRICS_TOKEN
    if not token:
        return bool(settings.DEBUG)
    return _bearer(authorization, token)


def _bearer(authorization: str, token: str) -> bool:
    """Whether the header is ``Bearer <token>``, compared in constant time."""
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":  # auth schemes are case-insensitive (RFC 9110)
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def scrape_registry(feedback: FeedbackCollector | None = None) -> CollectorRegistry:
    """What ``/metrics`` exposes: this process's metrics (or, in multiprocess mode, every
    worker's), plus the feedback metrics from the database (``feedback``: the default
    ``FeedbackCollector`` unless given) and the batch jobs' (``BatchJobCollector``)."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
    else:
        registry.register(REGISTRY)
    registry.register(feedback or FeedbackCollector())
    registry.register(BatchJobCollector())
    registry.register(ABTestCollector())
    registry.register(ShadowCollector())
    registry.register(DriftCollector())
    return registry
