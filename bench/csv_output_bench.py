"""The CSV answer's cost of escaping cells a spreadsheet would run (CSV_ESCAPE_FORMULAS).

    .venv/bin/python bench/csv_output_bench.py [--rows 50000] [--repeat 25]

``apps.endpoints.batch.output.csv_stream`` on one batch job's piece (``--rows``, the
default BATCH_JOB_CHUNK_ROWS) of three files, with the setting on and off, in turns, in
this process (settings ``server.settings_test``, no database: a scored batch is made of
random answers). CPU time of this thread, the best of ``--repeat`` for each:

  adult        rows sampled from ``adult.test`` (seeded): no cell starts like a formula,
               as in most files; answered line by line (no quotes);
  numeric      ten columns of numbers, about half of them negative: a sign starts half
               the cells, each a number to tell from a formula;
  quoted       the adult rows with every text cell quoted: answered through the csv module.

"Off" costs what the answer cost before escaping existed (within 2 %, measured against
that commit's output.py). Ratios within one run are what to compare: this machine is
shared and noisy.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shlex
import sys
import time
from collections.abc import Callable

from common import REPO, SERVER, save

sys.path[:0] = [str(SERVER), str(REPO / "research")]


def files(rows: int) -> dict[str, bytes]:
    import numpy as np
    import pandas as pd

    from adult import load_split

    adult = load_split("adult.test").sample(n=rows, replace=True, random_state=rows)
    numbers = (np.random.default_rng(rows).standard_normal((rows, 10)) * 0.05).round(6)
    numeric = pd.DataFrame(numbers, columns=[f"x{i}" for i in range(10)])
    return {
        "adult": adult.to_csv(index=False).encode(),
        "numeric": numeric.to_csv(index=False).encode(),
        "quoted": adult.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC).encode(),
    }


def scored(rows: int) -> Callable[[], object]:
    """A fresh scored batch of ``rows`` rows (a binary classifier's answers, not logged)."""
    import numpy as np

    from apps.endpoints.models import MLAlgorithm
    from apps.endpoints.serving.pipeline import ScoredBatch
    from apps.endpoints.serving.routing import Arms
    from apps.ml.answer import Answer, ModelOutput
    from apps.ml.signature import Feature, Signature

    signature = Signature(
        features=(Feature("age", "number"),),
        task="classification",
        classes=("<=50K", ">50K"),
        outputs=("label", "probability", "probabilities", "status"),
    )
    positive = np.random.default_rng(0).random(rows)

    def make() -> ScoredBatch:
        algorithm = MLAlgorithm(pk=1, name="m", version="1")
        result = ScoredBatch(
            Arms("e", "production", (algorithm,), (1.0,)), Answer(signature), header=["age"]
        )
        result.output = ModelOutput(
            labels=np.where(positive > 0.5, ">50K", "<=50K").astype(object),
            probabilities=np.column_stack([1 - positive, positive]),
        )
        result.row_arms = np.zeros(rows, np.int64)
        return result

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args()
    command = " ".join(["python bench/csv_output_bench.py", *map(shlex.quote, sys.argv[1:])])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings_test")
    import django

    django.setup()
    from django.conf import settings

    from apps.endpoints.batch import output

    make = scored(args.rows)

    def cpu(data: bytes, escape: bool) -> float:
        settings.CSV_ESCAPE_FORMULAS = escape
        result = make()
        started = time.thread_time()
        "".join(output.csv_stream(result, io.BytesIO(data)))  # type: ignore[arg-type]
        return time.thread_time() - started

    lines = [
        f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; CPU ms of"
        f" output.csv_stream on one {args.rows:,}-row piece, best of {args.repeat})",
        "",
        "| file | MB | escaping off, ms | on, ms | on / off |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, data in files(args.rows).items():
        off, on = [], []
        for _ in range(args.repeat):  # in turns: both see the same moments of the machine
            off.append(cpu(data, False))
            on.append(cpu(data, True))
        lines.append(
            f"| {name} | {len(data) / 1e6:.1f} | {min(off) * 1000:.0f} |"
            f" {min(on) * 1000:.0f} | {min(on) / min(off):.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    save("csv_output_bench", table)


if __name__ == "__main__":
    main()
