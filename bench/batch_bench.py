"""Batch prediction benchmark: the bare model call against the whole HTTP upload.

    .venv/bin/python bench/batch_bench.py [--sizes 1000,10000,100000,1000000] [--no-postgres]

For each size it writes a CSV sampled with replacement from ``adult.test`` (seeded) and
measures, in one run:

  (a) the bare vectorised model call (``predict_proba`` on the encoded rows), in process,
      best of three;
  (b) the whole upload through a real server: gunicorn with the production configuration
      and one worker, started fresh for each size, ``curl -F file=@...`` to the last byte
      of the JSON answer, on SQLite and on PostgreSQL, best of three uploads (of one, past
      ``--repeat-max`` rows), with the worker's peak RSS (VmHWM) after the uploads;
  (c) the row-by-row way of the design this project replaces (one scikit-learn call and
      one INSERT a row), up to 10k rows.

It prints rows/s, the ratio b/a and the peak RSS, as a Markdown table with the command.
Ratios within one run are what to compare: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import results  # bench/results.py

REPO = Path(__file__).resolve().parent.parent
SERVER = REPO / "backend" / "server"
OUT = REPO / "bench" / "out"
ARTIFACTS = Path(os.environ.get("MODEL_ARTIFACTS_PATH") or REPO / "research" / "artifacts")
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
sys.path[:0] = [str(SERVER), str(REPO / "research")]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_csv(rows: int) -> Path:
    from adult import load_split

    path = OUT / f"adult_{rows}.csv"
    if not path.exists():
        frame = load_split("adult.test").sample(n=rows, replace=True, random_state=rows)
        frame.insert(0, "id", range(1, rows + 1))
        frame.to_csv(path, index=False)
    return path


def bare_model(path: Path) -> float:
    """Rows/s of the wrapper's model call on the file's rows (encoding not timed)."""
    import pandas as pd

    from apps.ml.income_classifier import RandomForestClassifier

    wrapper = RandomForestClassifier.from_artifact(ARTIFACTS)
    matrix = wrapper.preprocessing.encode_frame(pd.read_csv(path, keep_default_na=True))
    best = float("inf")
    for _ in range(3):  # best of three: the machine is shared
        started = time.perf_counter()
        wrapper.predict_proba(matrix)
        best = min(best, time.perf_counter() - started)
    return len(matrix) / best


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(database_url: str) -> dict[str, str]:
    return dict(
        os.environ,
        DATABASE_URL=database_url,
        SECRET_KEY="benchmark-only",
        MODEL_ARTIFACTS_PATH=str(ARTIFACTS),
        LOG_LEVEL="WARNING",
    )


def http_upload(path: Path, database_url: str, repeat: int) -> tuple[float, float]:
    """(rows/s, worker peak RSS in MB) for the best of ``repeat`` uploads to a fresh
    gunicorn: the same treatment as the bare model's best of three."""
    env = server_env(database_url)
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=SERVER, env=env, check=True)
    port = free_port()
    # The production configuration (server/gunicorn.conf.py) with one worker, so that its
    # peak memory is the upload's, and a timeout long enough for a million rows.
    env.update(HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="1", GUNICORN_TIMEOUT="1200")
    server = subprocess.Popen(
        [python, "-m", "gunicorn", "-c", "server/gunicorn.conf.py", "server.wsgi"],
        cwd=SERVER, env=env, start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        for _ in range(200):
            ready = subprocess.run(["curl", "-sf", "-o", "/dev/null", f"{base}/endpoints"])
            if ready.returncode == 0:
                break
            time.sleep(0.1)
        # Warm up: load the model in the worker (as a running service would have).
        subprocess.run(["curl", "-sf", "-o", "/dev/null", "-F", f"file=@{make_csv(1000)}",
                        f"{base}/batch-predict"], check=True)
        rows = sum(1 for _ in path.open()) - 1
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            done = subprocess.run(
                ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-F", f"file=@{path}",
                 f"{base}/batch-predict"],
                capture_output=True, text=True, check=True,
            )
            best = min(best, time.perf_counter() - started)
            if done.stdout != "200":
                raise RuntimeError(f"upload of {path.name} answered {done.stdout}")
        worker = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True)
        rss = worker_peak_rss_mb(int(worker.stdout.split()[0]))
        return rows / best, rss
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def worker_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def row_by_row(path: Path, database_url: str) -> float:
    """The tutorial way, in process: per row a one-row model call and one INSERT."""
    script = f"""
import csv, time, django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from apps.endpoints.models import MLAlgorithm, MLRequest
from apps.ml.registry import get_registry
registry = get_registry(); registry.ensure_declared()
algorithm = MLAlgorithm.objects.get(name="random forest")
wrapper = registry.get(algorithm)
rows = list(csv.DictReader(open({str(path)!r})))
features = wrapper.features
started = time.perf_counter()
for row in rows:
    record = {{f: row[f] for f in features}}
    prediction = wrapper.compute_prediction(record)
    MLRequest.objects.create(input_data=record, full_response=prediction,
                             response=prediction["label"], parent_mlalgorithm=algorithm)
print(len(rows) / (time.perf_counter() - started))
"""
    # The design's way: scikit-learn for every row (no compiled form), an INSERT each.
    env = server_env(database_url) | {
        "DJANGO_SETTINGS_MODULE": "server.settings",
        "ML_COMPILED_INFERENCE": "0",
    }
    done = subprocess.run([sys.executable, "-c", script], cwd=SERVER, env=env,
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


class Databases:
    """A fresh SQLite file and a fresh PostgreSQL database per measurement."""

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres
        self.tmp = Path(tempfile.mkdtemp(prefix="batch-bench-"))
        self.count = 0

    def sqlite(self) -> str:
        self.count += 1
        return f"sqlite:///{self.tmp / f'db{self.count}.sqlite3'}"

    def pg(self) -> str:
        self.count += 1
        name = f"batch_bench_{os.getpid()}_{self.count}"
        subprocess.run(["psql", "-q", PG_ADMIN, "-c", f"CREATE DATABASE {name}"], check=True)
        self.pg_names = getattr(self, "pg_names", []) + [name]
        return f"postgres://postgres@127.0.0.1:5432/{name}"

    def drop(self) -> None:
        for name in getattr(self, "pg_names", []):
            subprocess.run(["psql", "-q", PG_ADMIN, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"])
        subprocess.run(["rm", "-rf", str(self.tmp)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--row-by-row-max", type=int, default=10_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--repeat-max", type=int, default=100_000,
                        help="files up to this many rows are uploaded three times (best kept)")
    args = parser.parse_args()
    command = "python bench/batch_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    OUT.mkdir(parents=True, exist_ok=True)
    if not (ARTIFACTS / "random_forest.joblib").exists():
        subprocess.run([sys.executable, str(REPO / "research" / "train.py"), "--out", str(ARTIFACTS)], check=True)
    import django

    os.environ.update(server_env("sqlite://:memory:"), DJANGO_SETTINGS_MODULE="server.settings")
    django.setup()
    dbs = Databases(postgres=not args.no_postgres)
    lines = []
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            path = make_csv(size)
            log(f"{size} rows: {path.stat().st_size / 1e6:.1f} MB; bare model call")
            bare = bare_model(path)
            log(f"{size} rows: HTTP upload, SQLite")
            repeat = 3 if size <= args.repeat_max else 1
            sqlite_rate, sqlite_rss = http_upload(path, dbs.sqlite(), repeat)
            pg_rate = pg_rss = float("nan")
            if dbs.postgres:
                log(f"{size} rows: HTTP upload, PostgreSQL")
                pg_rate, pg_rss = http_upload(path, dbs.pg(), repeat)
            slow = float("nan")
            if size <= args.row_by_row_max:
                log(f"{size} rows: row by row (SQLite)")
                slow = row_by_row(path, dbs.sqlite())
            lines.append(
                f"| {size:,} | {bare:,.0f} | {sqlite_rate:,.0f} | {sqlite_rate / bare:.2f} | "
                f"{sqlite_rss:.0f} | {pg_rate:,.0f} | {pg_rate / bare:.2f} | {pg_rss:.0f} | "
                + (f"{slow:,.0f} |" if slow == slow else "- |")
            )
            log(lines[-1])
    finally:
        dbs.drop()
    table = "\n".join([
        f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)",
        "",
        "| rows | (a) bare model rows/s | (b) HTTP SQLite rows/s | b/a | worker peak RSS MB |"
        " (b) HTTP PostgreSQL rows/s | b/a | worker peak RSS MB | (c) row by row rows/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *lines,
    ])
    print("\n" + table)
    results.save("batch_results", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
