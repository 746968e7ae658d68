"""What drift monitoring costs on the request path, in process: ``window.record`` of one
scored record (an append of its columns), beside ``drift.encode`` of one record alone and
the coding the buffer does when it is taken (250 single records together, a second's
worth at 250 req/s). Three rounds, on a temporary SQLite database:

    cd backend/server && rm -f /tmp/cost.sqlite3 && DEBUG=1 \\
      DATABASE_URL=sqlite:////tmp/cost.sqlite3 MODEL_ARTIFACTS_PATH=$PWD/../../research/artifacts \\
      DRIFT_FLUSH_SECONDS=0 ../../.venv/bin/python manage.py shell \\
      -c "exec(open('../../bench/drift_request_path.py').read()); main()"

bench/drift_bench.py measures the same over HTTP, with monitoring on and off.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    """Median and p99 of ``n`` calls, in microseconds."""
    out = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - start) * 1e6)
    return statistics.median(out), sorted(out)[int(0.99 * len(out))]


def main() -> None:
    sys.path.insert(0, "../../research")
    from django.core.management import call_command

    from adult import load_split
    from apps.endpoints.catalogue import demo
    from apps.endpoints.models import MLAlgorithm
    from apps.endpoints.monitoring import references, window
    from apps.ml import codecs, drift
    from apps.ml.registry import get_registry

    call_command("migrate", verbosity=0)
    demo.ensure_registered()
    algorithm = MLAlgorithm.objects.get(name="random forest")
    runtime = get_registry().get(algorithm)
    frame = load_split("adult.test").head(300)
    records = [
        {k: v for k, v in r.items() if k != "income" and v == v} for r in frame.to_dict("records")
    ]
    scored: list[tuple[Any, dict[str, Any]]] = []
    for record in records:
        one = codecs.frame_from_records([record], runtime.signature)
        scored.append((one, {"label": runtime.predict(one).labels}))
    current = references.current(algorithm)
    assert current is not None
    buffer = window._buffer.get()

    def together() -> float:
        for j in range(250):
            window.record(algorithm, *scored[j % 300])
        start = time.perf_counter()
        buffer.take()
        return (time.perf_counter() - start) * 1e6 / 250

    print(
        "| round | window.record, median us | p99 us | encode of one alone, us "
        "| coded together, us a record |"
    )
    print("|---:|---:|---:|---:|---:|")
    for round_ in range(3):
        path = timed(lambda i: window.record(algorithm, *scored[i % 300]), 3000)
        buffer.take()
        alone = timed(
            lambda i: drift.encode(current.profile, scored[i % 300][0].columns, scored[i % 300][1]),
            3000,
        )
        coded = statistics.median(together() for _ in range(20))
        print(f"| {round_} | {path[0]:.1f} | {path[1]:.1f} | {alone[0]:.1f} | {coded:.1f} |")
