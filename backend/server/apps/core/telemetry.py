"""Counters the product updates as traffic flows, with the official ``prometheus_client``.

They live at the ground so that every room can count without importing ``apps.ops``, which
only observes: ``ops/metrics.py`` exposes these at ``/metrics`` with what it reads from the
database at scrape time. Labels are plain strings: this module knows no model.

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` (``server/gunicorn.conf.py`` sets it) makes
each worker write its counts to files there, and a scrape of any worker adds up all of
them.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Histogram

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
JOB_ROWS = Counter(
    "ml_batch_job_rows",
    "Rows scored by batch jobs, by endpoint: counted by the process that scored each piece.",
    ["endpoint"],
)


def count_predictions(
    *, endpoint: str, algorithm: str, version: str, status: str, records: int
) -> None:
    PREDICTIONS.labels(endpoint=endpoint, algorithm=algorithm, version=version, status=status).inc(
        records
    )


def count_scored(
    *, endpoint: str, versions: Sequence[tuple[str, str]], rows: Sequence[int], status: str
) -> None:
    """A batch's rows by the version that scored them: ``versions`` as (name, version)
    pairs, ``rows`` how many each scored."""
    for (name, version), count in zip(versions, rows, strict=True):
        if count:
            count_predictions(
                endpoint=endpoint, algorithm=name, version=version, status=status, records=count
            )


def count_job_rows(endpoint: str, rows: int) -> None:
    """A piece of a batch job scored (``jobs.run_piece``, once its piece is committed)."""
    JOB_ROWS.labels(endpoint=endpoint).inc(rows)
