"""gunicorn (what ``make serve`` runs) against granian's WSGI mode, on the same app, in one
run:

    .venv/bin/python bench/servers_bench.py [--rounds 3] [--seconds 5]

Both with 2 worker processes on their own fresh SQLite database (migrated, the demo models
registered by the first request), the compiled path on, the access logs off:

  - gunicorn: the production configuration (``server/gunicorn.conf.py``: gthread, 4
    threads a worker, keep-alive connections closed after KEEPALIVE_REQUESTS answers);
  - granian ``GRANIAN_VERSION`` (``--interface wsgi --workers 2 --blocking-threads 4``),
    installed on first use into ``bench/out/granian`` (git-ignored) and put on the
    server's ``PYTHONPATH``: the project's venv is not changed. What gunicorn.conf.py sets
    for the workers is set in granian's environment too (one native thread for OpenMP
    and BLAS, two malloc arenas, a metrics folder of its own).

Every round measures, the servers in turn (the order turning round each round: the
machine drifts): ``GET /healthz`` at 8 connections; one-record predictions
(``POST /api/v1/income_classifier/predict``, 200 records of adult.test in turn) at 1 and 8
connections, ``--seconds`` of wrk each: req/s and p50; and a 10,000-row CSV to
``/api/v1/batch-predict`` (the best of 3 uploads, curl, to the answer's last byte):
rows/s. Beside each: the server's CPU (every process of its session) and the larger
worker's share of it.

Needs wrk and curl. Prints a Markdown table headed by the command, and saves it
(``bench/out/servers_results.md``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from batch_bench import make_csv
from drift_bench import upload
from predict_bench import PATH, Server, lua_script, records, wrk
from shadow_bench import OtherLoad

from common import ARTIFACTS, OUT, SERVER, children, cpu_of, free_port, log, save, server_env

GRANIAN_VERSION = "2.8.9"
GRANIAN_DIR = OUT / "granian"
BATCH_ROWS = 10_000
UPLOADS = 3


def install_granian() -> Path:
    marker = GRANIAN_DIR / f".installed-{GRANIAN_VERSION}"
    if not marker.exists():
        log(f"installing granian {GRANIAN_VERSION} into {GRANIAN_DIR}")
        shutil.rmtree(GRANIAN_DIR, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(GRANIAN_DIR),
             f"granian=={GRANIAN_VERSION}"],
            check=True,
        )  # fmt: skip
        marker.touch()
    return GRANIAN_DIR


class Granian:
    """granian serving ``server.wsgi`` with 2 workers, as ``Server`` serves gunicorn."""

    def __init__(self, database_url: str, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        metrics = folder / "granian-metrics"
        metrics.mkdir(parents=True, exist_ok=True)
        self.env = dict(
            server_env(database_url),
            ML_COMPILED_INFERENCE="1",
            ML_DEMO_MODELS="1",
            PYTHONPATH=os.pathsep.join([str(install_granian()), str(SERVER)]),
            PROMETHEUS_MULTIPROC_DIR=str(metrics),
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            MALLOC_ARENA_MAX="2",
        )
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], cwd=SERVER, env=self.env, check=True
        )

    def __enter__(self) -> Granian:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", "2",
             "--blocking-threads", "4", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-access-log", "--log-level", "warning", "server.wsgi:application"],
            cwd=SERVER, env=self.env, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=10) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("granian did not answer /healthz")

    def worker_pids(self) -> list[int]:
        return children(self.process.pid)

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


def session_pids(server: Any) -> list[int]:
    return [server.process.pid, *server.worker_pids()]


def measured(server: Any, run: Any) -> tuple[Any, float, float, float]:
    """``run()``'s result, the server's CPU seconds, the larger worker's share, and the
    other load meanwhile."""
    pids = session_pids(server)
    before = {pid: cpu_of(pid) or 0.0 for pid in pids}
    other = OtherLoad(pids)
    result = run()
    used = {pid: (cpu_of(pid) or 0.0) - before[pid] for pid in pids}
    workers = [used[pid] for pid in server.worker_pids() if pid in used]
    total = sum(used.values())
    return result, total, (max(workers) / sum(workers) if sum(workers) else 1.0), other.cores()


Rows = dict[tuple[str, str], list[tuple[float, float, float, float]]]
WRK_RUNS = (
    ("/healthz, 8 connections", "/healthz", 8),
    ("predict, 1 connection", PATH, 1),
    ("predict, 8 connections", PATH, 8),
)


def one_round(
    name: str, running: Any, scripts: dict[str, Path], csv: Path, args: Any, rows: Rows
) -> None:
    for what, path, connections in WRK_RUNS:
        numbers, cpu, share, other = measured(
            running,
            lambda p=path, c=connections: wrk(running.url, scripts[p], c, args.seconds, path=p),
        )
        rows.setdefault((f"{what}: req/s", name), []).append((numbers["rps"], cpu, share, other))
        rows.setdefault((f"{what}: p50 ms", name), []).append((numbers["p50"], 0.0, 0.0, 0.0))
    best, cpu, share, other = measured(
        running, lambda: min(upload(running.url, csv) for _ in range(UPLOADS))
    )
    rows.setdefault(
        (f"batch-predict, {BATCH_ROWS:,} rows: rows/s (CPU: 3 uploads)", name), []
    ).append((BATCH_ROWS / best, cpu, share, other))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    command = " ".join(["python bench/servers_bench.py", *map(shlex.quote, sys.argv[1:])])
    for tool in ("wrk", "curl"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: apt-get install {tool}", file=sys.stderr)
            return 2
    if not (ARTIFACTS / "random_forest.joblib").exists():
        print(f"No demo models in {ARTIFACTS}: run `make train` first.", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="servers-bench-"))
    rows: Rows = {}
    try:
        script = lua_script(records(), folder)
        empty = folder / "empty.lua"
        empty.write_text("")
        csv = make_csv(BATCH_ROWS)
        servers: dict[str, Server | Granian] = {
            "gunicorn": Server(
                f"sqlite:///{folder / 'g.sqlite3'}",
                compiled=True,
                extra_env={"ML_DEMO_MODELS": "1"},
            ),
            "granian": Granian(f"sqlite:///{folder / 'r.sqlite3'}", folder),
        }
        for round_ in range(args.rounds):
            order = list(servers.items())
            for name, server in order if round_ % 2 == 0 else order[::-1]:
                log(f"round {round_ + 1}: {name}")
                with server as running:
                    wrk(running.url, script, 8, 2)  # warm: both workers' models
                    upload(running.url, csv)
                    one_round(name, running, {"/healthz": empty, PATH: script}, csv, args, rows)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = [
        f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, wrk and curl;"
        f" SQLite, 2 workers each, the compiled path; medians of {args.rounds} rounds)",
        "",
        "| measurement | gunicorn | granian | granian / gunicorn | CPU s, gunicorn / granian"
        " | larger worker's share, gunicorn / granian | other load, cores |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    whats = list(dict.fromkeys(what for what, _ in rows))
    for what in whats:
        g, r = rows[(what, "gunicorn")], rows[(what, "granian")]
        gv, rv = statistics.median(x[0] for x in g), statistics.median(x[0] for x in r)
        if "p50" in what:
            lines.append(f"| {what} | {gv:.2f} | {rv:.2f} | {rv / gv:.2f}x | | | |")
            continue
        lines.append(
            f"| {what} | {gv:,.0f} | {rv:,.0f} | {rv / gv:.2f}x"
            f" | {statistics.median(x[1] for x in g):.2f}"
            f" / {statistics.median(x[1] for x in r):.2f}"
            f" | {statistics.median(x[2] for x in g):.0%}"
            f" / {statistics.median(x[2] for x in r):.0%}"
            f" | {statistics.median([x[3] for x in g + r]):.2f} |"
        )
    text = "\n".join(lines)
    print("\n" + text)
    save("servers_results", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
