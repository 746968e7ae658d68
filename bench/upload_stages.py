"""A CSV upload in process: where its time goes, and what each speed-up of the batch path
gives, variant against variant in one run.

    .venv/bin/python bench/upload_stages.py [--rows 10000,100000] [--rounds 7]
        [--database sqlite|postgresql]

Django's handler (its test client: the middleware, the DRF view, the streamed JSON answer;
no socket and no gunicorn) on a fresh database (SQLite in a temporary folder, or a
PostgreSQL database of its own, dropped at the end) with the demo forest, the file of
``batch_bench.make_csv``, ``log_requests`` true and false. The variants, switched in place
and taken in turn so that they see the same moments of this shared machine:

- ``before``: each chunk's model call on one thread (``MODEL_THREADS=1``), every chunk
  ``BATCH_CHUNK_ROWS`` rows, nothing frozen;
- ``frozen``: the objects loaded before the first upload frozen (``gc.freeze()``), as
  gunicorn's master freezes what it imported before forking a worker
  (``gunicorn.conf.py``, ``pre_fork``); here the model loaded before is frozen too, so
  this is the upper bound of that change;
- ``frozen+parts``: and a large chunk's model call in parts on two threads
  (``ml/parallel.py``);
- ``frozen+parts+ramp``: and the first chunks smaller (a quarter, then doubling;
  ``batch/reading.py``);
- ``frozen+parts+ramp+json``: and rows answered as JSON written as each chunk is scored
  (unlogged) or as the log's writer finishes it (logged; ``ScoredBatch(json_rows=True)``):
  what is served.

Per variant: the seconds the garbage collector ran during the uploads (a ``gc`` callback,
median of the rounds), the median and best seconds of ``--rounds`` uploads and rows/s. For the
served variant, where its time goes: per stage, the seconds spent inside it, summed over
an upload's chunks (median of the rounds), and on which thread (the model's stage runs on
the pipeline's model thread, the log's writes on its writer thread, the rest on the
request's). Stages on different threads overlap, so they add up to more than the upload.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from batch_bench import make_csv

from common import ARTIFACTS, PG_ADMIN, REPO, SERVER, log, save

sys.path[:0] = [str(SERVER), str(REPO / "research")]

ENDPOINT = "income_classifier"
# MODEL_THREADS, reading._RAMP, whether the objects loaded so far are frozen, and whether
# a JSON answer is written as it is scored. Frozen first: unfrozen, a full
# collection (0.15 s) falls every few uploads, on whichever variant's turn it is, and hides
# the other changes.
VARIANTS = {
    "before": (1, 1, False, False),
    "frozen": (1, 1, True, False),
    "frozen+parts": (2, 1, True, False),
    "frozen+parts+ramp": (2, 4, True, False),
    "frozen+parts+ramp+json": (2, 4, True, True),
}
SERVED = "frozen+parts+ramp+json"


class Stages:
    """Seconds spent inside each wrapped function, per upload, with the thread it ran on."""

    def __init__(self) -> None:
        self.spent: dict[tuple[str, str], float] = defaultdict(float)
        self.lock = threading.Lock()
        self._collecting = 0.0

    def wrap(self, owner: Any, name: str, stage: str) -> None:
        function = getattr(owner, name)

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = function(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - started)
            return self.each(stage, result) if isinstance(result, Generator) else result

        setattr(owner, name, timed)

    def each(self, stage: str, items: Iterator[Any]) -> Iterator[Any]:
        """A generator's items, the time of making each counted (a streamed answer)."""
        while True:
            started = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                self.add(stage, time.perf_counter() - started)
                return
            self.add(stage, time.perf_counter() - started)
            yield item

    def add(self, stage: str, seconds: float) -> None:
        thread = threading.current_thread().name.split("_")[0].rstrip("-0123456789")
        with self.lock:
            self.spent[(stage, thread)] += seconds

    def collector(self, phase: str, info: dict[str, Any]) -> None:
        """A ``gc.callbacks`` entry: the collector's passes, as a stage of their own."""
        if phase == "start":
            self._collecting = time.perf_counter()
        else:
            self.add("garbage collector", time.perf_counter() - self._collecting)

    def take(self) -> dict[tuple[str, str], float]:
        with self.lock:
            spent, self.spent = dict(self.spent), defaultdict(float)
        return spent


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'stages.sqlite3'}"
        return
    name = f"bench_stages_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", PG_ADMIN, "-qc", f"CREATE DATABASE {name}"], check=True)
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        from django.db import connections

        connections.close_all()
        subprocess.run(["psql", PG_ADMIN, "-qc", f"DROP DATABASE {name} WITH (FORCE)"], check=True)


def setup(url: str) -> tuple[Any, Stages]:
    os.environ.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="server.settings",
        DEBUG="1",
        LOG_LEVEL="WARNING",
        MODEL_ARTIFACTS_PATH=str(ARTIFACTS),
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from apps.endpoints.batch import output
    from apps.endpoints.batch import score as batch_score
    from apps.endpoints.catalogue import demo
    from apps.endpoints.serving import bulk, pipeline
    from apps.endpoints.views import batch as batch_view
    from apps.ml import parallel

    demo.ensure_registered()
    user = User.objects.create_superuser("bench", password=uuid.uuid4().hex)
    token = Token.objects.create(user=user).key

    def score_upload(**kwargs: Any) -> Any:
        kwargs["answer_json"] = kwargs.get("answer_json", False) and _JSON_ROWS[0]
        return batch_score.score_upload(**kwargs)

    vars(batch_view)["score_upload"] = score_upload  # what the view calls
    stages = Stages()
    stages.wrap(pipeline, "encode", "check and encode")
    stages.wrap(parallel, "predict", "model")
    stages.wrap(pipeline, "monitor", "drift window")
    stages.wrap(pipeline.ScoredBatch, "write", "keep answers (or write their JSON), evaluate")
    stages.wrap(pipeline.LogWriter, "rows", "log rows (JSON, texts)")
    stages.wrap(bulk, "write_rows", "log write")
    stages.wrap(batch_view, "score_upload", "the scoring, all above")
    stages.wrap(output, "json_stream", "answer (ids, tokens, JSON)")
    gc.callbacks.append(stages.collector)
    return token, stages


_JSON_ROWS = [True]  # whether the view may ask for json_rows (it does, for JSON answers)


def variant(name: str) -> None:
    from django.conf import settings

    from apps.endpoints.batch import reading

    settings.MODEL_THREADS, reading._RAMP, frozen, _JSON_ROWS[0] = VARIANTS[name]
    if frozen:
        gc.freeze()
    else:
        gc.unfreeze()


def uploader(token: str, path: Path) -> Callable[[bool], float]:
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    client = Client(SERVER_NAME="127.0.0.1")
    data = path.read_bytes()

    def upload(logged: bool) -> float:
        started = time.perf_counter()
        answer = client.post(
            "/api/v1/batch-predict",
            {
                "file": SimpleUploadedFile("rows.csv", data, content_type="text/csv"),
                "endpoint": ENDPOINT,
                "log_requests": "true" if logged else "false",
            },
            HTTP_AUTHORIZATION=f"Token {token}",
        )
        body = answer.getvalue()
        elapsed = time.perf_counter() - started
        assert answer.status_code == 200, body[:300]
        return elapsed

    return upload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="10000,100000")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    command = "python bench/upload_stages.py " + " ".join(sys.argv[1:])
    sizes = [int(s) for s in args.rows.split(",")]
    with tempfile.TemporaryDirectory() as folder, database(args.database, Path(folder)) as url:
        token, stages = setup(url)
        times: dict[tuple[int, bool, str], list[float]] = defaultdict(list)
        spent: dict[tuple[int, bool, str], list[dict[tuple[str, str], float]]] = defaultdict(list)
        for rows in sizes:
            upload = uploader(token, make_csv(rows))
            for logged in (True, False):
                for name in VARIANTS:  # warm up
                    variant(name)
                    upload(logged)
                for round_ in range(args.rounds):
                    order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
                    for name in order:
                        variant(name)
                        stages.take()
                        times[(rows, logged, name)].append(upload(logged))
                        spent[(rows, logged, name)].append(stages.take())
                log(f"{rows} rows, logged {logged}: done")
    print(table(command, args, sizes, times, spent))


def table(
    command: str,
    args: Any,
    sizes: list[int],
    times: dict[tuple[int, bool, str], list[float]],
    spent: dict[tuple[int, bool, str], list[dict[tuple[str, str], float]]],
) -> str:
    def collector(runs: list[dict[tuple[str, str], float]]) -> float:
        return statistics.median(
            sum(v for (stage, _), v in run.items() if stage == "garbage collector") for run in runs
        )

    lines = [
        f"`{command}` ({time.strftime('%Y-%m-%d')}, {args.database}, "
        f"{args.rounds} rounds, variants in turn)",
        "",
        "| rows | logged | variant | median s | best s | rows/s (median) | / before "
        "| garbage collector s |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for rows in sizes:
        for logged in (True, False):
            base = statistics.median(times[(rows, logged, "before")])
            for name in VARIANTS:
                values = times[(rows, logged, name)]
                median = statistics.median(values)
                lines.append(
                    f"| {rows:,} | {'yes' if logged else 'no'} | {name} | {median:.3f} "
                    f"| {min(values):.3f} | {rows / median:,.0f} | {base / median:.2f}x "
                    f"| {collector(spent[(rows, logged, name)]):.3f} |"
                )
    lines += [
        "",
        f"Where the time goes, variant {SERVED}: seconds inside each stage per upload "
        "(median of the rounds), by thread.",
        "",
        "| rows | logged | stage | thread | s |",
        "|---:|---|---|---|---:|",
    ]
    for rows in sizes:
        for logged in (True, False):
            runs = spent[(rows, logged, SERVED)]
            keys = sorted(
                {k for run in runs for k in run}, key=lambda k: -max(r.get(k, 0) for r in runs)
            )
            for stage, thread in keys:
                value = statistics.median(run.get((stage, thread), 0.0) for run in runs)
                lines.append(
                    f"| {rows:,} | {'yes' if logged else 'no'} | {stage} | {thread} | {value:.3f} |"
                )
    text = "\n".join(lines)
    save("upload_stages", text)
    return text


if __name__ == "__main__":
    main()
