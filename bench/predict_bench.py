"""Single-prediction benchmark: the wrapper in process, and the service over HTTP.

    .venv/bin/python bench/predict_bench.py [--seconds 20] [--no-postgres]
    .venv/bin/python bench/predict_bench.py --postgres-settings [--seconds 10] [--rounds 2]
    .venv/bin/python bench/predict_bench.py --against ../base [--seconds 10] [--rounds 4]

Needs wrk (Debian: ``apt-get install wrk``) as the load generator: a C program, so the
client takes little of the two cores the server needs. In one run, on the same random
forest and the same 200 records of ``adult.test``:

  (a) the bare wrapper call, one row, in process: compiled (ONNX Runtime) and scikit-learn;
  (b) POST /api/v1/income_classifier/predict under gunicorn with the production
      configuration (``server/gunicorn.conf.py``: 2 workers, 4 threads each), 1 and 8
      connections, ``--seconds`` each, on SQLite and PostgreSQL, with the compiled path on
      and off: req/s, p50, p99, errors (non-2xx or socket errors);
  (c) each worker's peak RSS after the load, and the time from starting gunicorn to the
      first answered prediction (a cold start: the worker loads the model for it); the
      req/s and latencies are taken after a 3 s warm-up, so they are the steady state;
  (d) MLflow's ``models serve``: not run here (no MLflow in this environment); the row is
      printed as skipped.

With ``--against DIR`` (another checkout, e.g. ``git worktree add ../base <commit>``) it
runs only HTTP predict on SQLite, compiled, this tree's server against that tree's,
alternating over ``--rounds`` rounds: the ratio of p50 and req/s is a change's cost.

With ``--postgres-settings`` it runs only PostgreSQL with the compiled path, under each of
its connection settings (``PG_VARIANTS``: the health check by socket or by ping, prepared
statements on and off, synchronous commit on and off), alternating them over ``--rounds`` rounds,
with the CPU the workers and PostgreSQL's processes spent per request (``/proc/<pid>/stat``
before and after each wrk run).

Ratios between variants measured in the same run are the numbers to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from common import (
    ARTIFACTS,
    OUT,
    PG_ADMIN,
    REPO,
    SERVER,
    UNBOUNDED,
    children,
    cpu_of,
    free_port,
    log,
    save,
    server_env,
)

PATH = "/api/v1/income_classifier/predict"
_PG_CREATED: list[str] = []  # databases made by _pg, dropped at the end
sys.path[:0] = [str(SERVER), str(REPO / "research")]


def records(n: int = 200) -> list[dict[str, object]]:
    from adult import load_split, schema

    frame = load_split("adult.test").head(n)[list(schema.FEATURES)]
    rows: list[dict[str, object]] = json.loads(frame.to_json(orient="records"))
    return rows


def in_process(records: list[dict[str, object]]) -> dict[str, float]:
    """Median microseconds of one ``compute_prediction``, compiled and scikit-learn."""
    # The compiled cache is sealed with SECRET_KEY, so the wrapper needs Django's settings:
    # without them it falls back to scikit-learn and "compiled" would time scikit-learn.
    # (The servers started later set each of these variables themselves.)
    os.environ.update(server_env("sqlite://:memory:"), DJANGO_SETTINGS_MODULE="server.settings")
    import django

    django.setup()
    from apps.ml.income_classifier import IncomeClassifier

    wrapper = IncomeClassifier.from_artifact(ARTIFACTS, "random_forest.joblib", compile=True)
    if wrapper.compiled is None:
        raise RuntimeError("the compiled path did not load; (a) would time scikit-learn twice")
    timings: dict[str, float] = {}
    for variant in ("compiled", "sklearn"):
        if variant == "sklearn":
            wrapper.compiled = None
        runs = []
        for record in records * (5 if variant == "compiled" else 1):
            started = time.perf_counter()
            wrapper.compute_prediction(record)
            runs.append(time.perf_counter() - started)
        timings[variant] = statistics.median(runs) * 1e6
    return timings


def lua_script(records: list[dict[str, object]], folder: Path, name: str = "predict.lua") -> Path:
    """A wrk script that POSTs ``records`` in turn as JSON bodies."""
    bodies = ",\n".join("[[" + json.dumps(r) + "]]" for r in records)
    path = folder / name
    path.write_text(
        "local bodies = {" + bodies + "}\n"
        "local i = 0\n"
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\n"
        "end\n"
    )
    return path


class Server:
    """gunicorn with 2 sync workers on a fresh database."""

    def __init__(
        self,
        database_url: str,
        compiled: bool,
        extra_env: dict[str, str] | None = None,
        server_dir: Path = SERVER,
    ) -> None:
        self.server_dir = server_dir
        self.env = dict(
            os.environ,
            **UNBOUNDED,
            DATABASE_URL=database_url,
            SECRET_KEY="benchmark-only",
            MODEL_ARTIFACTS_PATH=str(ARTIFACTS),
            ML_COMPILED_INFERENCE="1" if compiled else "0",
            # The production configuration (server/gunicorn.conf.py): 2 workers of 4
            # threads, keep-alive; the per-request access line is silenced here.
            WEB_CONCURRENCY="2",
            GUNICORN_THREADS="4",
            LOG_LEVEL="WARNING",
        )
        # The caller's settings win, these above included (e.g. MODEL_ARTIFACTS_PATH).
        self.env.update(extra_env or {})
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=server_dir,
            env=self.env,
            check=True,
        )
        self.port = free_port()
        self.env.update(HOST="127.0.0.1", PORT=str(self.port))
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        body = json.dumps(records(1)[0]).encode()
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py", "server.wsgi"],
            cwd=self.server_dir,
            env=self.env,
            start_new_session=True,
        )
        while True:  # poll until a prediction is answered
            try:
                request = urllib.request.Request(
                    self.url + PATH, body, {"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=30) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.02)
            if time.perf_counter() - started > 120:
                raise RuntimeError("the server did not answer within 120 s")
        self.first_prediction_s = time.perf_counter() - started
        return self

    def worker_pids(self) -> list[int]:
        return children(self.process.pid)

    def worker_rss_mb(self) -> list[float]:
        peaks = []
        for pid in self.worker_pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        return peaks

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


def wrk(
    url: str, script: Path, connections: int, seconds: int, *, path: str = PATH
) -> dict[str, float]:
    """wrk's numbers for ``url`` + ``path``."""
    target = url + path
    done = subprocess.run(
        [
            "wrk",
            "-t",
            str(min(connections, 2)),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            target,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
        "requests": requests,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--postgres-settings",
        action="store_true",
        help="only PostgreSQL (compiled), its connection settings against each other",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--against",
        type=Path,
        help="another checkout's root: HTTP predict there against here, alternating",
    )
    args = parser.parse_args()
    command = "python bench/predict_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    if not (ARTIFACTS / "random_forest.joblib").exists():
        subprocess.run(
            [sys.executable, str(REPO / "research" / "train.py"), "--out", str(ARTIFACTS)],
            check=True,
        )
    tmp = Path(tempfile.mkdtemp(prefix="predict-bench-"))
    script = lua_script(records(), tmp)
    if args.against is not None:
        try:
            return against(command, script, args.against, args.seconds, args.rounds, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.postgres_settings:
        try:
            return postgres_settings(command, script, args.seconds, args.rounds)
        finally:
            for name in _PG_CREATED:
                subprocess.run(
                    ["psql", "-q", PG_ADMIN, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"]
                )
            shutil.rmtree(tmp, ignore_errors=True)
    log("(a) in process, one row")
    bare = in_process(records())
    rows = [
        f"| (a) in process, compiled | | {1e6 / bare['compiled']:,.0f} |"
        f" {bare['compiled'] / 1e3:.3f} | | | | |",
        f"| (a) in process, scikit-learn | | {1e6 / bare['sklearn']:,.0f} |"
        f" {bare['sklearn'] / 1e3:.3f} | | | | |",
    ]
    databases: list[tuple[str, Callable[[int], str]]] = [
        ("SQLite", lambda n: f"sqlite:///{tmp / f'db{n}.sqlite3'}")
    ]
    if not args.no_postgres:
        databases.append(("PostgreSQL", lambda n: _pg(n)))
    measured: dict[tuple[str, bool, int], dict[str, float]] = {}
    n = 0
    try:
        for db_name, make_url in databases:
            for compiled in (True, False):
                n += 1
                variant = "compiled" if compiled else "scikit-learn"
                with Server(make_url(n), compiled) as server:
                    log(
                        f"(b) {db_name}, {variant}: first prediction after"
                        f" {server.first_prediction_s:.2f} s"
                    )
                    # Steady state: every worker loads its model on its first request.
                    wrk(server.url, script, 8, 3)
                    for connections in (1, 8):
                        log(
                            f"(b) {db_name}, {variant}, {connections} connection(s),"
                            f" {args.seconds} s"
                        )
                        r = wrk(server.url, script, connections, args.seconds)
                        measured[(db_name, compiled, connections)] = r
                        rows.append(
                            f"| (b) HTTP {db_name}, {variant} | {connections} | {r['rps']:,.0f} | "
                            f"{r['p50']:.2f} | {r['p99']:.2f} | {r['errors']:.0f} | "
                            + (
                                f"{max(server.worker_rss_mb()):.0f} |"
                                f" {server.first_prediction_s:.2f} |"
                                if connections == 8
                                else "| |"
                            )
                        )
    finally:
        for name in _PG_CREATED:
            subprocess.run(
                ["psql", "-q", PG_ADMIN, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"]
            )
        shutil.rmtree(tmp, ignore_errors=True)
    rows.append("| (d) MLflow `models serve` | | skipped: MLflow is not installed here | | | | | |")
    ratios = []
    for db_name, _ in databases:
        for connections in (1, 8):
            on, off = (
                measured[(db_name, True, connections)],
                measured[(db_name, False, connections)],
            )
            ratios.append(
                f"{db_name}, {connections} conn.: compiled/scikit-learn req/s ="
                f" {on['rps'] / off['rps']:.1f}x"
            )
    table = "\n".join(
        [
            f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores,"
            " load generator: wrk)",
            "",
            "| variant | connections | req/s | p50 ms | p99 ms | errors | worker peak RSS MB |"
            " start to first prediction s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            *[f"- {r}" for r in ratios],
        ]
    )
    print("\n" + table)
    save("predict_results", table)
    return 0


def against(command: str, script: Path, other: Path, seconds: int, rounds: int, tmp: Path) -> int:
    """HTTP predict on SQLite, compiled, this tree's server and ``other``'s in turn, over
    ``rounds`` rounds that alternate which goes first; the median of the rounds per tree,
    and this tree's ratio to the other's."""
    trees = [("this tree", SERVER), (f"other ({other})", other / "backend" / "server")]
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    n = 0
    for round_ in range(rounds):
        for name, server_dir in trees if round_ % 2 == 0 else trees[::-1]:
            n += 1
            with Server(f"sqlite:///{tmp / f'against{n}.sqlite3'}", True, None, server_dir) as s:
                wrk(s.url, script, 8, 3)  # steady state: each worker loaded its model
                for connections in (1, 8):
                    log(f"round {round_ + 1}: {name}, {connections} connection(s), {seconds} s")
                    results.setdefault((name, connections), []).append(
                        wrk(s.url, script, connections, seconds)
                    )

    def median(name: str, connections: int, key: str) -> float:
        return statistics.median(r[key] for r in results[(name, connections)])

    here, there = (name for name, _ in trees)
    rows = [
        f"| {name} | {c} | {median(name, c, 'rps'):,.0f} | {median(name, c, 'p50'):.3f} |"
        f" {median(name, c, 'p99'):.2f} |"
        for name in (here, there)
        for c in (1, 8)
    ]
    ratios = [
        f"- {c} connection(s): req/s {median(here, c, 'rps') / median(there, c, 'rps'):.3f}x,"
        f" p50 {median(here, c, 'p50') / median(there, c, 'p50'):.3f}x"
        for c in (1, 8)
    ]
    table = "\n".join(
        [
            f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load generator:"
            f" wrk; SQLite, compiled; median of {rounds} alternating rounds)",
            "",
            "| server | connections | req/s | p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
            "This tree against the other:",
            *ratios,
        ]
    )
    print("\n" + table)
    save("predict_against", table)
    return 0


# PostgreSQL's connection settings (server/settings.py), each against the default.
PG_VARIANTS: dict[str, dict[str, str]] = {
    "default (prepared statements, socket health check, durable commits)": {},
    "health check pings (DB_HEALTH_CHECK=ping)": {"DB_HEALTH_CHECK": "ping"},
    "no prepared statements (DB_SERVER_SIDE_BINDING=0)": {"DB_SERVER_SIDE_BINDING": "0"},
    "DB_SYNCHRONOUS_COMMIT=off": {"DB_SYNCHRONOUS_COMMIT": "off"},
}


def postgres_settings(command: str, script: Path, seconds: int, rounds: int) -> int:
    """One-row predict on PostgreSQL, compiled, under each of PG_VARIANTS, in ``rounds``
    rounds that alternate them (the machine drifts: each variant sees early and late
    moments); the median of the rounds per variant, and its ratio to the default."""
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    n = 0
    for round_ in range(rounds):
        for name, env in PG_VARIANTS.items():
            n += 1
            with Server(_pg(n), True, env) as server:
                wrk(server.url, script, 8, 3)  # steady state: each worker loaded its model
                for connections in (1, 8):
                    log(f"round {round_ + 1}: {name}, {connections} connection(s), {seconds} s")
                    busy = [server.worker_pids(), _postgres_pids()]
                    before = [_cpu_seconds(pids) for pids in busy]
                    measured = wrk(server.url, script, connections, seconds)
                    used = [
                        _cpu_seconds(pids) - was for pids, was in zip(busy, before, strict=True)
                    ]
                    measured["worker_us"] = used[0] / measured["requests"] * 1e6
                    measured["postgres_us"] = used[1] / measured["requests"] * 1e6
                    results.setdefault((name, connections), []).append(measured)
    default = next(iter(PG_VARIANTS))

    def median(name: str, connections: int, key: str) -> float:
        return statistics.median(r[key] for r in results[(name, connections)])

    rows = []
    for name in PG_VARIANTS:
        for connections in (1, 8):
            rps, p50 = median(name, connections, "rps"), median(name, connections, "p50")
            base = median(default, connections, "rps")
            rows.append(
                f"| {name} | {connections} | {rps:,.0f} | {rps / base:.2f} | {p50:.2f} |"
                f" {median(name, connections, 'p99'):.2f} |"
                f" {median(name, connections, 'worker_us'):,.0f} |"
                f" {median(name, connections, 'postgres_us'):,.0f} |"
            )
    table = "\n".join(
        [
            f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load generator:"
            f" wrk; median of {rounds} alternating rounds)",
            "",
            "| PostgreSQL variant (compiled model, 2 workers) | connections | req/s |"
            " / default | p50 ms | p99 ms | CPU us per request: workers | PostgreSQL |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    print("\n" + table)
    save("predict_postgres_settings", table)
    return 0


def _cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds of these processes so far (those still running)."""
    return sum(cpu_of(pid) or 0.0 for pid in pids)


def _postgres_pids() -> list[int]:
    """Every PostgreSQL process (its backends and writers: a commit's work is spread)."""
    found = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _pg(n: int) -> str:
    name = f"predict_bench_{os.getpid()}_{n}"
    subprocess.run(["psql", "-q", PG_ADMIN, "-c", f"CREATE DATABASE {name}"], check=True)
    _PG_CREATED.append(name)
    return f"postgres://postgres@127.0.0.1:5432/{name}"


if __name__ == "__main__":
    sys.exit(main())
