"""What a /metrics scrape costs as the request log grows: the feedback tally it reads now
against the aggregate over the log it ran before.

In process, on ``DATABASE_URL`` (default: a SQLite file in a temporary folder; otherwise a
database the benchmark may fill: it is migrated and rows are added, never removed), the
log grows to each size of ``--rows``: three algorithms (two classifiers, one regressor),
rows shaped like the demo's, half of them with feedback, written the way a batch upload
with a label column writes them (``bulk.BackgroundWriter``, which keeps the tally). At
each size, after one warm-up call of each:

- a whole scrape with the tally: the ``/metrics`` view as Prometheus calls it (the process's
  own metrics, then one query on the tally), median of ``--repeat`` scrapes;
- the same scrape with the feedback counted by scanning the log
  (``selectors.feedback_counts_by_scan``, what /metrics did before), median of 5;
- the tally's query alone, and the scrape without feedback (the process's own metrics);
- ``tally.recount`` (``manage.py recount_feedback``), once; it must find nothing to fix.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> \\
        .venv/bin/python bench/metrics_bench.py [--rows 200000,1000000] [--repeat 200]

Ratios within one run are what to compare: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from common import REPO, UNBOUNDED, log, save, stub_algorithm

sys.path.insert(0, str(REPO / "backend" / "server"))

CHUNK = 50_000
# A logged Adult request and its answer, as predict writes them (about 400 bytes a row):
# the scan reads the whole row, so its cost depends on the rows' width as well as count.
RECORD = json.dumps(
    {
        "age": 37, "workclass": "Private", "fnlwgt": 34146, "education": "HS-grad",
        "education-num": 9, "marital-status": "Married-civ-spouse",
        "occupation": "Craft-repair", "relationship": "Husband", "race": "White",
        "sex": "Male", "capital-gain": 0, "capital-loss": 0, "hours-per-week": 68,
        "native-country": "United-States",
    }
)  # fmt: skip
CLASSES = ("<=50K", ">50K")


def setup_django(database_url: str) -> None:
    os.environ.update(
        UNBOUNDED,
        DJANGO_SETTINGS_MODULE="server.settings",
        DATABASE_URL=database_url,
        SECRET_KEY="metrics-bench-only",
        ML_DEMO_MODELS="0",
        LOG_LEVEL="WARNING",
        METRICS_TOKEN="",
    )
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # this process's registry, as in tests
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def algorithms() -> list[Any]:
    from apps.endpoints.models import MLAlgorithm

    found = list(MLAlgorithm.objects.filter(owner="bench").order_by("id"))
    if found:
        return found  # a database grown by an earlier run
    return [
        stub_algorithm(endpoint="bench", name="forest", status="production"),
        stub_algorithm(endpoint="bench", name="trees", status="testing"),
        stub_algorithm(
            endpoint="bench_regression", name="gb", status="production", task="regression"
        ),
    ]


def log_rows(count: int, algorithms: list[Any], rng: random.Random) -> list[Any]:
    """``count`` log rows spread over the algorithms; half of them with feedback."""
    rows = []
    for i in range(count):
        algorithm = algorithms[i % len(algorithms)]
        if algorithm.task == "regression":
            predicted = round(rng.uniform(25, 350), 3)
            response, answer = repr(predicted), json.dumps({"prediction": predicted})
            truth = repr(round(predicted + rng.gauss(0, 50), 1)) if rng.random() < 0.5 else None
        else:
            label, probability = rng.choice(CLASSES), rng.random()
            response = label
            answer = json.dumps({"label": label, "probability": probability, "status": "OK"})
            truth = (
                (label if rng.random() < 0.8 else rng.choice(CLASSES))
                if rng.random() < 0.5
                else None
            )
        given_by = None if truth is None else "user:bench"
        rows.append((RECORD, answer, response, truth, algorithm.pk, None, None, given_by))
    return rows


def grow(to: int, algorithms: list[Any], rng: random.Random) -> None:
    """Add rows until the log has ``to``; on PostgreSQL, then VACUUM ANALYZE the table, as
    autovacuum does to a table in service (and would otherwise do in the middle of the
    timings)."""
    from django.db import connection, transaction

    from apps.endpoints.models import MLRequest
    from apps.endpoints.serving import bulk

    have = MLRequest.objects.count()
    while have < to:
        count = min(CHUNK, to - have)
        with transaction.atomic(), bulk.BackgroundWriter() as writer:
            writer.submit(log_rows(count, algorithms, rng))
        have += count
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {MLRequest._meta.db_table}")


def median_ms(call: Callable[[], object], repeat: int) -> float:
    call()  # warm-up: connection, hint bits, caches
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def measure(repeat: int) -> str:
    from django.db import connection
    from django.http import HttpResponse
    from django.test import RequestFactory
    from prometheus_client import REGISTRY, generate_latest

    from apps.endpoints.models import MLRequest
    from apps.endpoints.serving import selectors, tally
    from apps.ops import metrics, views

    request = RequestFactory().get("/metrics")
    scan = metrics.FeedbackCollector(source=selectors.feedback_counts_by_scan)

    def with_tally() -> HttpResponse:
        response = views.metrics_view(request)
        assert response.status_code == 200 and b"ml_running_mae" in response.content
        return response

    def with_scan() -> bytes:
        return generate_latest(metrics.scrape_registry(scan))

    rows = MLRequest.objects.count()  # more than asked for in a database grown before
    tallied, scanned = selectors.feedback_counts(), selectors.feedback_counts_by_scan()
    assert [(c.given, c.correct) for c in tallied] == [(c.given, c.correct) for c in scanned]
    given = sum(c.given for c in tallied)
    assert given == MLRequest.objects.filter(feedback__isnull=False).count()
    tally_ms = median_ms(with_tally, repeat)
    scan_ms = median_ms(with_scan, 5)
    query_ms = median_ms(selectors.feedback_counts, repeat)
    own_ms = median_ms(lambda: generate_latest(REGISTRY), repeat)
    started = time.perf_counter()
    assert tally.recount() == 0, "the tally kept by the writes was wrong"
    recount_s = time.perf_counter() - started
    return (
        f"| {connection.vendor} | {rows:,} | {given:,} | {tally_ms:.2f} | {scan_ms:.1f} | "
        f"{scan_ms / tally_ms:,.0f}x | {query_ms:.2f} | {own_ms:.2f} | {recount_s:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", default="200000,1000000", help="log sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=200, help="scrapes timed with the tally")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.rows.split(","))
    url = os.environ.get("DATABASE_URL")
    with tempfile.TemporaryDirectory() as folder:
        setup_django(url or f"sqlite:///{folder}/bench.sqlite3")
        command = shlex.join(["python", "bench/metrics_bench.py", *sys.argv[1:]])
        if url:
            command = f"DATABASE_URL={url.split(':', 1)[0]}://... {command}"
        rng = random.Random(2026)
        found = algorithms()
        lines = []
        for size in sizes:
            log(f"growing the log to {size:,} rows")
            grow(size, found, rng)
            log(f"timing scrapes at {size:,} rows")
            lines.append(measure(args.repeat))
    table = "\n".join(
        [
            f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)",
            "",
            "| database | logged rows | with feedback | scrape, tally ms | scrape, scan ms | "
            "scan / tally | tally query ms | process metrics ms | recount_feedback s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *lines,
        ]
    )
    print(table)
    save("metrics_bench", table)


if __name__ == "__main__":
    main()
