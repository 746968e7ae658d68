"""Load test (issue #5): predictions with feedback mixed in, exact row accounting, and
concurrent stops of one A/B test.

    .venv/bin/python bench/load_test.py [--seconds 60] [--clients 32] [--workers 4] [--no-postgres]

Per database (SQLite, then PostgreSQL), fresh, with a fresh server (``bin/serve``: migrate,
collectstatic, gunicorn with ``--workers`` workers):

  (a) ``--clients`` threads, each on its own keep-alive ``http.client`` connection, send
      requests back to back until the deadline, always waiting for the one in flight (wrk
      abandons those at the end, which would break the accounting). Every 4th request of a
      client is ``PATCH mlrequests/<id>`` with the true label for its oldest prediction
      without feedback, the others ``POST income_classifier/predict`` with a record of
      ``adult.test``. A 3 s warm-up of the same traffic comes first (workers load their
      model on first use); rates and latencies are of the measured ``--seconds`` only.
  (b) No error (non-2xx, socket error, ERROR/Traceback in the server log); the MLRequest ids
      are exactly the ``request_id``s of the 2xx predictions, warm-up included (nothing lost,
      nothing doubled); the rows with feedback are exactly those sent, with their labels.
  (c) A/B: a staff user with a DRF token creates a test (random forest vs extra trees), sends
      300 records to ``predict?status=ab_testing`` with their true labels (so the stop
      decides without ``force``), then 8 threads released by one barrier POST
      ``stop_ab_test/<id>``. Expected: one 200, seven 409 ``ab_test_stopped``, the test
      ended, one production algorithm, and the stop's 2 status rows written once.

GUNICORN_THREADS is 4, the production default: the test covers what is deployed, including
the state a worker's threads share (registry, selection cache); 16 server slots for 32
clients keep a queue, so the server is saturated. The Python client shares the 2 cores
(its latencies include waiting for the GIL), so rates are below ``predict_bench.py``'s
(wrk). Exit status 1 if any check fails; the table also goes to bench/out/load_results.md.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import ARTIFACTS, OUT, PG_ADMIN, REPO, SERVER, UNBOUNDED, free_port, log, save

PREDICT = "/api/v1/income_classifier/predict"
JSON = {"Content-Type": "application/json", "Accept": "application/json"}
STAFF = "loadtest"
sys.path[:0] = [str(REPO / "research")]


def records() -> list[tuple[str, str]]:
    """(JSON body, true label) for every row of adult.test; missing values go as null."""
    from adult import load_split, schema

    frame = load_split("adult.test")
    rows = json.loads(frame[list(schema.FEATURES)].to_json(orient="records"))
    return [(json.dumps(row), label) for row, label in zip(rows, frame[schema.LABEL], strict=True)]


@dataclass
class Sample:
    kind: str  # "predict" or "feedback"
    status: int  # 0: socket error
    seconds: float
    request_id: int | None  # predict: the id answered; feedback: the id it was sent for
    label: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def client(
    port: int,
    first: int,
    data: list[tuple[str, str]],
    start: threading.Barrier,
    stop_at: list[float],
    out: list[Sample],
) -> None:
    """One client: requests back to back on one keep-alive connection until the deadline."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    pending: collections.deque[tuple[int, str, str]] = collections.deque()
    n = 0
    start.wait()
    while time.perf_counter() < stop_at[0]:
        n += 1
        if n % 4 == 0 and pending:
            request_id, token, label = pending.popleft()
            kind, method, path = "feedback", "PATCH", f"/api/v1/mlrequests/{request_id}"
            body = json.dumps({"feedback": label, "feedback_token": token})
        else:
            body, label = data[(first + n) % len(data)]
            kind, method, path, request_id = "predict", "POST", PREDICT, None
        started = time.perf_counter()
        try:
            connection.request(method, path, body, JSON)
            answer = connection.getresponse()
            status, text = answer.status, answer.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            status, text = 0, repr(exc)
            connection.close()  # http.client reconnects on the next request
        sample = Sample(kind, status, time.perf_counter() - started, request_id, label)
        if not sample.ok:
            sample.error = f"{method} {path} -> {status}: {text[:300]}"
        elif kind == "predict":
            served = json.loads(text)
            sample.request_id = served["request_id"]
            pending.append((served["request_id"], served["feedback_token"], label))
        out.append(sample)
    connection.close()


def run_load(
    port: int, clients: int, seconds: float, data: list[tuple[str, str]]
) -> tuple[list[Sample], float]:
    """All samples of ``clients`` threads running for ``seconds``, and the wall time from
    the start to the last answer (the requests in flight at the deadline are waited for)."""
    outs: list[list[Sample]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop_at = [math.inf]
    threads = [
        threading.Thread(
            target=client, args=(port, i * len(data) // clients, data, start, stop_at, outs[i])
        )
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for t in threads:
        t.join()
    return [s for out in outs for s in out], time.perf_counter() - began


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)  # nearest rank
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


class Server:
    """``bin/serve`` on a fresh database, its output in a log file; stopped by process group."""

    def __init__(self, database_url: str, workers: int, tmp: Path) -> None:
        self.port = free_port()
        self.log_path = tmp / f"server-{self.port}.log"
        self.env = dict(
            os.environ,
            **UNBOUNDED,
            PYTHON=sys.executable,
            DATABASE_URL=database_url,
            SECRET_KEY="load-test-only",
            MODEL_ARTIFACTS_PATH=str(ARTIFACTS),
            HOST="127.0.0.1",
            PORT=str(self.port),
            WEB_CONCURRENCY=str(workers),
            GUNICORN_THREADS="4",
            LOG_LEVEL="WARNING",
            # Open prediction routes and no throttling whatever the caller's environment says;
            # static files and metrics in our temp dir, not in the repository or /tmp.
            PREDICT_ACCESS="open",
            STATIC_ROOT=str(tmp / "static"),
            PROMETHEUS_MULTIPROC_DIR=str(tmp / f"metrics-{self.port}"),
        )
        for name in ("PREDICT_THROTTLE_RATE", "MANAGEMENT_THROTTLE_RATE"):
            self.env.pop(name, None)

    def __enter__(self) -> Server:
        self.log_file = self.log_path.open("w")
        self.process = subprocess.Popen(
            [str(SERVER / "bin" / "serve")],
            cwd=SERVER,
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while True:  # /readyz logs no prediction, so the row accounting starts at zero
            try:
                if call(self.port, "GET", "/readyz")[0] == 200:
                    return self
            except (OSError, ValueError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()  # __exit__ is not called when __enter__ raises
                raise RuntimeError(
                    "the server did not become ready:\n" + self.log_path.read_text()[-2000:]
                )
            time.sleep(0.2)

    def log_errors(self) -> list[str]:
        return [
            line
            for line in self.log_path.read_text().splitlines()
            if " ERROR " in line or " CRITICAL " in line or "Traceback" in line
        ]

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=60)
        self.log_file.close()

    def shell(self, code: str) -> Any:
        """Run ``code`` in ``manage.py shell`` against the server's database; its last line
        is JSON."""
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=SERVER,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])


def call(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(
            method, path, None if body is None else json.dumps(body), {**JSON, **(headers or {})}
        )
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read() or b"null")
    finally:
        connection.close()


ROWS = """import json
from apps.endpoints.models import MLRequest
rows = MLRequest.objects.all()
print(json.dumps({"ids": list(rows.values_list("id", flat=True)),
                  "feedback": dict(rows.exclude(feedback=None).values_list("id", "feedback"))}))"""

TOKEN = f"""import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
# A superuser (staff with every permission); no password: token only.
user = get_user_model().objects.create_superuser({STAFF!r}, email=None, password=None)
print(json.dumps(Token.objects.create(user=user).key))"""

AB_STATE = """import json
from apps.endpoints.models import ABTest, MLAlgorithmStatus
test = ABTest.objects.get(pk=%d)
active = MLAlgorithmStatus.objects.filter(
    active=True, parent_mlalgorithm__parent_endpoint__name="income_classifier")
print(json.dumps({"state": test.state, "ended": test.ended_at is not None,
                  "outcome": (test.summary_json or {}).get("outcome"),
                  "production": active.filter(status="production").count(),
                  "stop_rows": list(MLAlgorithmStatus.objects.filter(created_by=%r)
                      .exclude(status="ab_testing").values_list("status", flat=True))}))"""


def check_rows(server: Server, samples: list[Sample]) -> tuple[int, int, bool, bool]:
    """(rows, 2xx predictions, the ids match, the feedback matches)."""
    answered = [s.request_id for s in samples if s.kind == "predict" and s.ok]
    sent = {s.request_id: s.label for s in samples if s.kind == "feedback" and s.ok}
    logged = server.shell(ROWS)
    ids = logged["ids"]
    rows_match = (
        len(ids) == len(answered)
        and len(set(answered)) == len(answered)
        and set(ids) == set(answered)
    )
    feedback = {int(k): v for k, v in logged["feedback"].items()}
    return len(ids), len(answered), rows_match, feedback == sent


def ab_stops(server: Server, data: list[tuple[str, str]], n: int = 300) -> tuple[str, bool]:
    """Create a test, feed it, stop it from 8 threads at once; (report line, passed)."""
    port = server.port
    staff = {"Authorization": f"Token {server.shell(TOKEN)}"}
    status, page = call(port, "GET", "/api/v1/mlalgorithms")
    by_name = {a["name"]: a["id"] for a in page["results"]}
    status, test = call(
        port,
        "POST",
        "/api/v1/abtests",
        {
            "title": "load test",
            "parent_mlalgorithm_1": by_name["random forest"],
            "parent_mlalgorithm_2": by_name["extra trees"],
        },
        staff,
    )
    if status != 201:
        return f"creating the A/B test answered {status}: {test}", False
    for i, (body, label) in enumerate(
        data[-n:]
    ):  # one assignment key per person, as a client would
        status, served = call(
            port,
            "POST",
            PREDICT + "?status=ab_testing",
            json.loads(body),
            {"X-Assignment-Key": f"person-{i}"},
        )
        if status == 200:
            status, served = call(
                port,
                "PATCH",
                f"/api/v1/mlrequests/{served['request_id']}",
                {"feedback": label, "feedback_token": served["feedback_token"]},
            )
        if status != 200:
            return f"feeding the A/B test: HTTP {status}: {served}", False

    barrier = threading.Barrier(8)
    answers: list[tuple[int, str]] = []

    def stop() -> None:
        stopper = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        stopper.connect()  # connected before the barrier, so the 8 POSTs leave together
        barrier.wait()
        stopper.request("POST", f"/api/v1/stop_ab_test/{test['id']}", "{}", {**JSON, **staff})
        answer = stopper.getresponse()
        body = json.loads(answer.read() or b"{}")
        code = body["error"]["code"] if "error" in body else body.get("state", "")  # e.g. stopped
        answers.append((answer.status, code))  # list.append is atomic
        stopper.close()

    threads = [threading.Thread(target=stop) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = collections.Counter(answers)
    after = server.shell(AB_STATE % (test["id"], STAFF))
    passed = (
        counts == {(200, after["state"]): 1, (409, "ab_test_stopped"): 7}
        and after["ended"]
        and after["state"] in ("stopped", "aborted")
        and after["production"] == 1
        and sorted(after["stop_rows"]) == ["production", "testing"]
    )
    line = (
        "8 concurrent stops: "
        + ", ".join(f"{k} x {s} ({c})" for (s, c), k in sorted(counts.items()))
        + f"; test {after['state']} ({after['outcome']}),"
        f" production algorithms: {after['production']},"
        f" status rows written by the stops: {len(after['stop_rows'])}"
        f" ({after['stop_rows'].count('production')} production)"
    )
    return line, passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    command = "python bench/load_test.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    OUT.mkdir(parents=True, exist_ok=True)
    if not (ARTIFACTS / "random_forest.joblib").exists():
        subprocess.run(
            [sys.executable, str(REPO / "research" / "train.py"), "--out", str(ARTIFACTS)],
            check=True,
        )
    data = records()
    tmp = Path(tempfile.mkdtemp(prefix="load-test-"))
    databases = [("SQLite", f"sqlite:///{tmp / 'load.sqlite3'}")]
    pg_name = f"load_test_{os.getpid()}"
    if not args.no_postgres:
        subprocess.run(["psql", "-q", PG_ADMIN, "-c", f"CREATE DATABASE {pg_name}"], check=True)
        databases.append(("PostgreSQL", f"postgres://postgres@127.0.0.1:5432/{pg_name}"))
    lines, notes, failed = [], [], False
    try:
        for name, url in databases:
            with Server(url, args.workers, tmp) as server:
                log(
                    f"{name}: server ready on port {server.port};"
                    f" {args.clients} clients, 3 s warm-up"
                )
                warm, _ = run_load(server.port, args.clients, 3, data)
                log(f"{name}: measuring {args.seconds:g} s")
                samples, elapsed = run_load(server.port, args.clients, args.seconds, data)
                everything = warm + samples
                errors = [s for s in everything if not s.ok]
                rows, answered, rows_ok, feedback_ok = check_rows(server, everything)
                log(f"{name}: A/B test, 8 concurrent stops")
                ab_line, ab_ok = ab_stops(server, data)
                server_errors = server.log_errors()
            predict = [s.seconds * 1e3 for s in samples if s.kind == "predict"]
            feedback = [s for s in samples if s.kind == "feedback"]
            every = [s.seconds * 1e3 for s in samples]
            rates = " | ".join(
                f"{n / elapsed:,.0f}" for n in (len(predict), len(feedback), len(samples))
            )
            times = " | ".join(
                f"{percentile(v, q):.1f}" for v in (predict, every) for q in (0.5, 0.99)
            )
            lines.append(
                f"| {name} | {args.clients} | {args.seconds:g} | {len(samples):,} | "
                f"{rates} | {times} | "
                f"{len(errors)} | {rows:,} | {answered:,} | {'yes' if rows_ok else 'NO'} | "
                f"{'yes' if feedback_ok else 'NO'} |"
            )
            log(lines[-1])
            notes.append(f"- {name}: {ab_line}{'' if ab_ok else ' -- FAILED'}")
            notes.append(
                f"- {name}: {len(warm):,} warm-up requests; "
                f"server log ERROR/Traceback lines: {len(server_errors)}"
            )
            for item in [e.error for e in errors[:5]] + server_errors[:5]:
                notes.append(f"  - `{item}`")
            failed |= (
                bool(errors) or not rows_ok or not feedback_ok or not ab_ok or bool(server_errors)
            )
    finally:
        if not args.no_postgres:
            subprocess.run(
                ["psql", "-q", PG_ADMIN, "-c", f"DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"]
            )
        shutil.rmtree(tmp, ignore_errors=True)
    table = "\n".join(
        [
            f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores,"
            f" gunicorn {args.workers} workers x 4 threads, load generator: Python threads)",
            "",
            "| database | clients | seconds | requests | predict req/s | feedback req/s |"
            " total req/s | predict p50 ms | predict p99 ms | all p50 ms | all p99 ms | errors* |"
            " MLRequest rows | 2xx predictions* | rows match | feedback rows match |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
            *lines,
            "",
            *notes,
            "- *: warm-up included (rates and latencies are of the measured seconds only)",
            "",
            f"Result: {'FAILED' if failed else 'all checks passed'}",
        ]
    )
    print("\n" + table)
    save("load_results", table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
