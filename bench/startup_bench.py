"""How long ``bin/serve`` (what ``make serve`` runs) takes to answer, on a fresh database and
on one a previous start already migrated:

    .venv/bin/python bench/startup_bench.py [--rounds 3] [--compare OTHER_CHECKOUT]

Each round starts the server on a fresh SQLite database and a fresh ``STATIC_ROOT`` (the
first start: migrations, the static files collected, the demo models registered), stops
it, and starts it again on the same database and folder (a restart: nothing left to do
but what every start needs). Times from spawning ``bin/serve`` to the first 200 of
``/healthz`` (a worker answers) and of ``/readyz`` (a worker has loaded every serving
version). With ``--compare``, the same for another checkout's ``backend/server`` (e.g. a
clone of an earlier commit: ``git clone -q . /tmp/before && git -C /tmp/before checkout
<commit>``), the two alternating within each round. The production configuration (2
workers of 4 threads), the compiled path on; the demo models of ``research/artifacts``.

Prints a Markdown table headed by the command, and saves it (``bench/out/startup_results.md``).
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

from common import ARTIFACTS, SERVER, free_port, log, save, server_env

TIMEOUT_S = 180.0


def start_once(server_dir: Path, folder: Path) -> tuple[float, float]:
    """Seconds from spawning bin/serve until /healthz, then /readyz, answered 200."""
    port = free_port()
    env = server_env(f"sqlite:///{folder / 'db.sqlite3'}")
    env.update(
        PORT=str(port),
        HOST="127.0.0.1",
        PYTHON=sys.executable,
        STATIC_ROOT=str(folder / "static"),
        ML_COMPILED_INFERENCE="1",
        WEB_CONCURRENCY="2",
        GUNICORN_THREADS="4",
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(server_dir / "bin" / "serve")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    marks: dict[str, float] = {}
    try:
        for path in ("/healthz", "/readyz"):
            while path not in marks:
                if process.poll() is not None:
                    raise RuntimeError(f"{server_dir}/bin/serve exited with {process.returncode}")
                if time.perf_counter() - started > TIMEOUT_S:
                    raise RuntimeError(f"no 200 from {path} within {TIMEOUT_S} s")
                try:
                    with urllib.request.urlopen(base + path, timeout=TIMEOUT_S) as answer:
                        if answer.status == 200:
                            marks[path] = time.perf_counter() - started
                except OSError:
                    time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    return marks["/healthz"], marks["/readyz"]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--compare", type=Path, help="another checkout (its backend/server is started too)"
    )
    args = parser.parse_args()
    command = " ".join(["python bench/startup_bench.py", *map(shlex.quote, sys.argv[1:])])
    if not (ARTIFACTS / "random_forest.joblib").exists():
        print(f"No demo models in {ARTIFACTS}: run `make train` first.", file=sys.stderr)
        return 2
    checkouts = {"this checkout": SERVER}
    if args.compare is not None:
        checkouts[f"`{args.compare}`"] = args.compare.resolve() / "backend" / "server"
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for round_ in range(args.rounds):
        order = list(checkouts.items())
        for name, server_dir in order if round_ % 2 == 0 else order[::-1]:
            folder = Path(tempfile.mkdtemp(prefix="startup-bench-"))
            try:
                for start in ("first start (fresh database)", "restart (same database)"):
                    log(f"round {round_ + 1}: {name}, {start}")
                    times.setdefault((name, start), []).append(start_once(server_dir, folder))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    lines = [
        f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; bin/serve, 2"
        f" workers of 4 threads, SQLite, the compiled path; median of {args.rounds} rounds)",
        "",
        "| checkout | start | to /healthz, s | to /readyz, s | /readyz each round, s |",
        "|---|---|---:|---:|---|",
    ]
    for (name, start), runs in times.items():
        lines.append(
            f"| {name} | {start} | {statistics.median(r[0] for r in runs):.2f}"
            f" | {statistics.median(r[1] for r in runs):.2f}"
            f" | {', '.join(f'{r[1]:.2f}' for r in runs)} |"
        )
    text = "\n".join(lines)
    print("\n" + text)
    save("startup_results", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
