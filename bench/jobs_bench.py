"""Batch jobs benchmark: a CSV file scored in the background by Celery workers, against
the bare model call.

    .venv/bin/python bench/jobs_bench.py [--rows 1000000 | --quick] [--repeat 1]
        [--rss-base 100000] [--database-url postgres://...] [--redis-db 9]
        [--log both|false|true] [--no-profile | --profile-only] [--keep-data]

Rows are sampled with replacement from ``adult.test`` (seeded, ``batch_bench.make_csv``:
the same files as the other batch benchmark). In one run it measures:

  (a)  the bare vectorised model: the production demo forest's wrapper (scikit-learn, one
       thread), ``predict_proba`` on the encoded rows (encoding not timed), as
       bench/batch_bench.py does; best of three, and of one more before each job. Beside it,
       for reference, (a') the same wrapper as the registry serves it (its verified ONNX
       form, up to the recorded crossover) called on chunks of BATCH_CHUNK_ROWS rows, the
       way a job's piece calls it (timed once, and once before each job);
  (b)  a job through the whole system with one worker process (``--concurrency 1``);
  (c)  the same with two worker processes (``--concurrency 2``);
       (b) and (c) each with log_requests false and true.

A job: gunicorn with the production configuration (one web worker, as batch_bench starts
it) and a Celery worker (``celery -A server worker``, as ``make worker`` starts it, on a
queue of this run's own), both on a fresh PostgreSQL database (copied from one migrated
template; or the one of ``--database-url`` / DATABASE_URL), a Redis broker database of
this run's (``--redis-db``) and a storage folder of its own. Each measurement starts them
afresh (so that a worker's peak RSS is that job's), warms every worker process up with a
small job, then submits the file with ``curl -F`` and polls ``GET /api/v1/batch-jobs/<id>``
(every 0.1 s at first, backing off to 1 s: each poll costs the web worker CPU) until it
says ``succeeded``: the time is from the submission's first byte to the job's finished_at
in that answer (the same machine's clock). The result is then downloaded and its lines
counted (and, with the log, the log rows), so that a job that skipped rows cannot look
fast.

Per job it reports rows/s, the ratios to (a) and between (c) and (b), the CPU seconds
spent by the workers, the web server and PostgreSQL (the run's backends and its auxiliary
processes), what the rest of the machine took meanwhile, the share of 0.1 s samples in
which a backend of the run waited for a lock (and on which statement), and the peak RSS
(VmHWM) of each worker process, at ``--rss-base`` rows and at ``--rows`` rows (each on
fresh workers: the flat-memory target is peak(--rows) <= 1.2 x peak(--rss-base)).

Targets (2 cores): (b) >= 0.7 x (a) with log_requests false; (c) >= 1.5 x (b). Beside
each, what the load of the rest of the machine does not change: the CPU the job spent per
row against the bare model's (and so the cores 0.7 x (a) would take), and the cores each
job got while the others took theirs ("idle" near 0: the machine was full).

Then (unless ``--no-profile``) one process runs ``jobs.run_piece`` itself, as a worker does,
on a job of the same file submitted in process (no broker), for log_requests false and
true: the first piece (it loads the model), the second timed stage by stage, wall and CPU
time of the thread that ran it (storage read, parsing, checking and encoding the cells,
the model on its thread, the log rows' COPY on the writer's, the piece's output CSV,
writing it), the third under cProfile (its main thread; the top functions go to
``bench/out/jobs_profile.txt``); without the log, every other piece one after the other
too, and ``finish``, the join of the pieces' outputs. ``--profile-only`` skips the jobs.

Ratios within one run are what to compare: this machine is shared and noisy.
Everything it starts (servers, workers, databases, Redis keys, folders) is removed at the
end, and the CSV files it had to write (unless ``--keep-data``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch_bench import BareModel, make_csv

from common import (
    ARTIFACTS,
    OUT,
    PG_ADMIN,
    REPO,
    SERVER,
    TICK,
    children,
    cpu_of,
    free_port,
    log,
    save,
    server_env,
    stop,
)

sys.path[:0] = [str(SERVER), str(REPO / "research")]

PG_HOST = "postgres://postgres@127.0.0.1:5432"
POLL_SECONDS = 0.1
POLL_MAX_SECONDS = 1.0
WARMUP_ROWS = 1000
TARGET_B_OVER_A = 0.7
TARGET_C_OVER_B = 1.5
TARGET_RSS = 1.2
AUX_BACKENDS = ("checkpointer", "background writer", "walwriter", "autovacuum launcher")


# -- processes -----------------------------------------------------------------------------


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for {pid}")


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every core), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / TICK


# -- PostgreSQL ----------------------------------------------------------------------------


def psql(sql: str, database: str = PG_ADMIN) -> str:
    return subprocess.run(
        ["psql", "-qAtX", database, "-c", sql], capture_output=True, text=True, check=True
    ).stdout.strip()


class Databases:
    """A migrated template, then a copy of it per measurement; or the given database for
    everything (it is migrated, and the rows the jobs write stay in it)."""

    def __init__(self, given: str | None, env: dict[str, str]) -> None:
        self.given = given
        self.names: list[str] = []
        self.prefix = f"jobs_bench_{os.getpid()}"
        self.template = ""
        url = given
        if not given:
            self.template = self._create(f"{self.prefix}_template")
            url = f"{PG_HOST}/{self.template}"
        assert url is not None
        migrate = dict(env, DATABASE_URL=url)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], cwd=SERVER, env=migrate, check=True
        )
        if given:
            log(f"Using the given database {given.rsplit('@', 1)[-1]} (rows stay in it).")

    def _create(self, name: str, template: str = "") -> str:
        clause = f" TEMPLATE {template}" if template else ""
        psql(f"CREATE DATABASE {name}{clause}")
        self.names.append(name)
        return name

    def fresh(self) -> str:
        if self.given:
            return self.given
        name = self._create(f"{self.prefix}_{len(self.names)}", self.template)
        return f"{PG_HOST}/{name}"

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[-1]
        if not self.given and name in self.names:
            psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            self.names.remove(name)

    def drop_all(self) -> None:
        for name in list(reversed(self.names)):
            with contextlib.suppress(subprocess.CalledProcessError):
                psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.names.clear()


class Watch(threading.Thread):
    """Samples, every 0.1 s while a job runs: which backends of the run's database wait for
    a lock (and on which statement), and the CPU time of the database's processes (the
    run's backends, whenever they started, and PostgreSQL's own writers)."""

    def __init__(self, database_url: str) -> None:
        super().__init__(daemon=True)
        import psycopg

        self.conn = psycopg.connect(database_url, autocommit=True)
        self.dbname = database_url.rsplit("/", 1)[-1]
        self.stopping = threading.Event()
        self.samples = 0
        self.waiting_samples = 0
        self.waits: Counter[str] = Counter()
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.sample(initial=True)

    def sample(self, *, initial: bool = False) -> None:
        rows = self.conn.execute(
            "SELECT pid, wait_event_type, left(regexp_replace(query, '\\s+', ' ', 'g'), 90)"
            " FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            " AND (datname = %s OR backend_type = ANY(%s))",
            [self.dbname, list(AUX_BACKENDS)],
        ).fetchall()
        waiting = 0
        for pid, wait_type, query in rows:
            cpu = cpu_of(pid)
            if cpu is not None:
                self.first.setdefault(pid, cpu if initial else 0.0)
                self.last[pid] = cpu
            if wait_type == "Lock":
                waiting += 1
                self.waits[query] += 1
        if not initial:
            self.samples += 1
            self.waiting_samples += waiting > 0

    def run(self) -> None:
        while not self.stopping.wait(POLL_SECONDS):
            self.sample()

    def finish(self) -> float:
        self.stopping.set()
        self.join()
        for pid in self.last:  # a last reading of those still there
            cpu = cpu_of(pid)
            if cpu is not None:
                self.last[pid] = cpu
        self.conn.close()
        return sum(self.last[pid] - self.first[pid] for pid in self.last)


# -- Redis ---------------------------------------------------------------------------------


class Broker:
    """A Redis database for this run; the keys it finds there are left alone, the others
    deleted at the end (never FLUSHDB)."""

    def __init__(self, db: int) -> None:
        import redis

        self.url = f"redis://127.0.0.1:6379/{db}"
        self.client = redis.Redis.from_url(self.url)
        self.before = set(self.client.keys("*"))
        if self.before:
            log(f"Redis database {db} holds {len(self.before)} keys already; they are kept.")
        self.queue = f"jobs_bench_{os.getpid()}"

    def cleanup(self) -> int:
        ours = [k for k in self.client.keys("*") if k not in self.before]
        if ours:
            self.client.delete(*ours)
        self.client.close()
        return len(ours)


# -- the system: web server and workers ----------------------------------------------------


class Stack:
    """gunicorn (production configuration, one web worker) and a Celery worker of
    ``concurrency`` processes on one database, broker queue and storage folder."""

    def __init__(
        self, database_url: str, broker: Broker, storage: Path, concurrency: int, logs: Path
    ) -> None:
        self.env = dict(
            server_env(database_url),
            DEBUG="0",
            CELERY_BROKER_URL=broker.url,
            BATCH_JOB_QUEUE=broker.queue,
            BATCH_JOB_STORAGE_PATH=str(storage),
        )
        self.port = free_port()
        web = dict(
            self.env,
            HOST="127.0.0.1",
            PORT=str(self.port),
            WEB_CONCURRENCY="1",
            GUNICORN_TIMEOUT="1200",
        )
        self.base = f"http://127.0.0.1:{self.port}/api/v1"
        self.server_log = (logs / f"server-{self.port}.log").open("wb")
        self.server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py", "server.wsgi"],
            cwd=SERVER,
            env=web,
            stdout=self.server_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.worker_log = (logs / f"worker-{self.port}.log").open("wb")
        # As `make worker` starts it (production settings), on this run's queue, with a name
        # of its own and no gossip with any other worker on the broker.
        self.worker = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "server", "worker",
                "--loglevel", "WARNING", "--queues", broker.queue,
                "--concurrency", str(concurrency),
                "-n", f"{broker.queue}_{self.port}@%h", "--without-gossip", "--without-mingle",
            ],
            cwd=SERVER,
            env=self.env,
            stdout=self.worker_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.concurrency = concurrency
        try:
            self._wait_ready()
        except BaseException:  # no object for the caller to close: stop both here
            self.close()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None or self.worker.poll() is not None:
                raise RuntimeError(f"the server or the worker exited; see {self.server_log.name}")
            try:
                with urllib.request.urlopen(f"{self.base}/endpoints", timeout=5):
                    pass
                if len(self.processes()) == self.concurrency:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server or the worker did not start within 60 s")

    def processes(self) -> list[int]:
        """The worker's pool processes (those that run the tasks)."""
        return children(self.worker.pid)

    def web_worker(self) -> int:
        return children(self.server.pid)[0]

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of the Celery worker (its main process and pool processes)
        and of the web server (master and worker)."""
        workers = [self.worker.pid, *self.processes()]
        web = [self.server.pid, *children(self.server.pid)]
        return (
            sum(cpu_of(p) or 0.0 for p in workers),
            sum(cpu_of(p) or 0.0 for p in web),
        )

    def submit(self, path: Path, log_requests: bool) -> dict[str, Any]:
        done = subprocess.run(
            [
                "curl", "-sS", "-w", "\n%{http_code}",
                "-F", f"file=@{path}", "-F", "endpoint=income_classifier",
                "-F", f"log_requests={'true' if log_requests else 'false'}",
                f"{self.base}/batch-jobs",
            ],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        body, code = done.stdout.rsplit("\n", 1)
        if code != "202":
            raise RuntimeError(f"submitting {path.name} answered {code}: {body[:500]}")
        job: dict[str, Any] = json.loads(body)
        return job

    def get(self, job: dict[str, Any], suffix: str = "") -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.base}/batch-jobs/{job['id']}{suffix}", headers={"X-Job-Token": job["token"]}
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            body: dict[str, Any] = json.load(answer)
        return body

    def wait(self, job: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
        """Poll until the job has ended; its last state. Every 0.1 s at first, then less
        often (up to every POLL_MAX_SECONDS): each GET costs the web worker a few ms of CPU,
        taken from the workers on two cores. The end is the job's own finished_at."""
        deadline = time.monotonic() + timeout
        pause = POLL_SECONDS
        while time.monotonic() < deadline:
            body = self.get(job)
            if body["state"] in ("succeeded", "failed", "cancelled"):
                return body
            time.sleep(pause)
            pause = min(POLL_MAX_SECONDS, pause * 1.25)
        raise RuntimeError(f"job {job['id']} did not end within {timeout} s")

    def result_lines(self, job: dict[str, Any]) -> int:
        request = urllib.request.Request(
            f"{self.base}/batch-jobs/{job['id']}/result", headers={"X-Job-Token": job["token"]}
        )
        lines = 0
        with urllib.request.urlopen(request, timeout=600) as answer:
            while block := answer.read(4 * 1024 * 1024):
                lines += block.count(b"\n")
        return lines

    def warm_up(self, path: Path) -> list[int]:
        """Small jobs, as many at once as there are worker processes, until every process
        has scored one (loaded the model): the state of a service that has been running.
        Returns each process's VmRSS in kB after it."""
        processes = self.processes()
        base = {p: status_kb(p, "VmRSS") for p in processes}
        for _ in range(5):
            jobs = [self.submit(path, False) for _ in processes]
            for job in jobs:
                body = self.wait(job, timeout=300)
                if body["state"] != "succeeded":
                    raise RuntimeError(f"warm-up job failed: {body.get('error')}")
            rss = {p: status_kb(p, "VmRSS") for p in processes}
            if all(rss[p] - base[p] > 20_000 for p in processes):  # the model is in
                return [rss[p] for p in processes]
        log(f"  warning: some worker process did not grow after warm-up: {base} -> {rss}")
        return [rss[p] for p in processes]

    def close(self) -> None:
        stop(self.worker)
        stop(self.server)
        self.server_log.close()
        self.worker_log.close()


# -- one job -------------------------------------------------------------------------------


@dataclass
class Job:
    rows: int
    workers: int
    log_requests: bool
    submit_s: float  # to the 202
    total_s: float  # submission to the first `succeeded` seen
    queued_s: float  # the job's created_at to its finished_at (the service's own clock)
    pieces: int
    cpu_workers: float
    cpu_web: float
    cpu_pg: float
    cpu_other: float  # the rest of the machine meanwhile
    cpu_machine: float  # the whole machine (every core) meanwhile
    lock_share: float  # of 0.1 s samples with a backend of the run waiting for a lock
    lock_waits: dict[str, int]
    rss_mb: list[float]  # VmHWM of each worker process

    @property
    def rate(self) -> float:
        return self.rows / self.total_s

    @property
    def variant(self) -> tuple[int, bool]:
        return self.workers, self.log_requests


def epoch_of(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def seconds_between(body: dict[str, Any], start: str, end: str) -> float:
    return epoch_of(body[end]) - epoch_of(body[start])


def run_job(
    path: Path,
    rows: int,
    workers: int,
    log_requests: bool,
    dbs: Databases,
    broker: Broker,
    tmp: Path,
    before: Callable[[], None],
) -> Job:
    database_url = dbs.fresh()
    storage = Path(tempfile.mkdtemp(prefix="storage-", dir=tmp))
    stack = Stack(database_url, broker, storage, workers, tmp)
    try:
        warm = stack.warm_up(make_csv(WARMUP_ROWS))
        log(f"  warm: worker processes at {[round(r / 1024) for r in warm]} MB")
        before()  # the bare model, timed now: the same moment of the machine
        watch = Watch(database_url)
        cpu_workers, cpu_web = stack.cpu()
        busy = machine_busy()
        own = cpu_of(os.getpid()) or 0.0
        watch.start()
        started, epoch = time.perf_counter(), time.time()
        job = stack.submit(path, log_requests)
        submitted = time.perf_counter()
        body = stack.wait(job)
        cpu_pg = watch.finish()
        after_workers, after_web = stack.cpu()
        cpu_total = machine_busy() - busy
        own = (cpu_of(os.getpid()) or 0.0) - own
        if body["state"] != "succeeded":
            raise RuntimeError(f"job {job['id']} {body['state']}: {body.get('error')}")
        rss = [status_kb(p, "VmHWM") / 1024 for p in stack.processes()]
        lines = stack.result_lines(job)
        if lines != rows + 1:
            raise RuntimeError(f"the result has {lines} lines, not {rows + 1}")
        if log_requests:
            logged = int(psql("SELECT count(*) FROM endpoints_mlrequest", database_url))
            if logged != rows:
                raise RuntimeError(f"{logged} log rows, not {rows}")
        ours = (after_workers - cpu_workers) + (after_web - cpu_web) + cpu_pg + own
        return Job(
            rows=rows,
            workers=workers,
            log_requests=log_requests,
            submit_s=submitted - started,
            total_s=epoch_of(body["finished_at"]) - epoch,
            queued_s=seconds_between(body, "created_at", "finished_at"),
            pieces=body["chunks_total"],
            cpu_workers=after_workers - cpu_workers,
            cpu_web=after_web - cpu_web,
            cpu_pg=cpu_pg,
            cpu_other=max(0.0, cpu_total - ours),
            cpu_machine=cpu_total,
            lock_share=watch.waiting_samples / max(watch.samples, 1),
            lock_waits=dict(watch.waits.most_common(3)),
            rss_mb=rss,
        )
    finally:
        stack.close()
        dbs.drop(database_url)
        subprocess.run(["rm", "-rf", str(storage)])


# -- the bare model, as the registry serves it to a job's piece ---------------------------


class ChunkedModel:
    """(a'): the wrapper with its verified compiled form (as the registry loads it), called
    on BATCH_CHUNK_ROWS-row slices of the encoded rows, as a piece's chunks call it."""

    def __init__(self, bare: BareModel, chunk_rows: int) -> None:
        from apps.ml.income_classifier import IncomeClassifier

        self.wrapper = IncomeClassifier.from_artifact(
            ARTIFACTS, "random_forest.joblib", compile=True
        )
        self.matrix = bare.matrix
        self.chunk_rows = chunk_rows
        compiled = self.wrapper.compiled
        if compiled is None:
            self.engine = "scikit-learn (no compiled form)"
        else:  # the crossover recorded for the artifact: up to it, ONNX serves
            engine = "scikit-learn" if compiled.max_rows < chunk_rows else "ONNX"
            self.engine = f"{engine} (recorded crossover: ONNX up to {compiled.max_rows:,} rows)"
        self.best = float("inf")
        self.time_once()  # and once before each job

    def time_once(self) -> None:
        started = time.perf_counter()
        for start in range(0, len(self.matrix), self.chunk_rows):
            self.wrapper.predict_proba(self.matrix[start : start + self.chunk_rows])
        self.best = min(self.best, time.perf_counter() - started)

    @property
    def rate(self) -> float:
        return len(self.matrix) / self.best


# -- the profile: jobs.run_piece in this process --------------------------------------------


class Stages:
    """Wall time and CPU time (of the calling thread) per stage, added up: functions of the
    job code wrapped in place (module attributes, looked up at each call), generators timed
    per item. Wall well above CPU on a thread is waiting: for another thread's result, the
    GIL, or a core."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.lock = threading.Lock()

    def add(self, name: str, wall: float, cpu: float) -> None:
        with self.lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + wall
            self.cpu[name] = self.cpu.get(name, 0.0) + cpu

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - wall, time.thread_time() - cpu)

        setattr(owner, attribute, timed)

    def wrap_generator(self, owner: Any, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            items = original(*args, **kwargs)
            while True:
                wall, cpu = time.perf_counter(), time.thread_time()
                try:
                    item = next(items)
                except StopIteration:
                    self.add(name, time.perf_counter() - wall, time.thread_time() - cpu)
                    return
                self.add(name, time.perf_counter() - wall, time.thread_time() - cpu)
                yield item

        setattr(owner, attribute, timed)


# Stages, in the order of a piece: (name, thread, what it is).
STAGES = [
    ("storage read", "main", "jobs._piece_bytes: the header and the piece's byte range"),
    ("checks", "main", "reading.read_header + check_field_counts on the piece"),
    ("parse", "main", "reading.CsvFile.batches: pandas.read_csv of the piece, text columns"),
    ("check cells", "main", "codecs.frame_from_text: each cell checked and converted"),
    ("encode", "main", "the wrapper's encode (preprocessing)"),
    ("answers + log rows", "main", "pipeline.LogWriter.rows: the answers' texts, the rows"),
    ("score", "main", "jobs._score: the piece through the pipeline"),
    ("output CSV", "main", "output.csv_stream: the piece re-read and written"),
    ("storage write", "main", "jobs._write: encode and save the piece's output"),
    ("run_piece", "main", "all of it"),
    ("model", "model thread", "pipeline.predict: the model call, beside the main thread"),
    ("log write", "writer thread", "bulk.write_rows: COPY of the log rows"),
    ("tally", "main", "tally.save: the feedback counts (row lock until the commit)"),
]


def profile_main(path: Path, log_requests: bool, out: Path, whole: bool) -> int:
    """In a subprocess (``--_profile``): a job of ``path`` submitted in process, its pieces
    run by ``jobs.run_piece`` one after the other, one of them timed by stage, one under
    cProfile; with ``whole`` every other piece too, then ``jobs.finish``. Writes a JSON
    summary to ``out``."""
    import cProfile
    import io
    import pstats

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")
    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import AnonymousUser

    from apps.endpoints import policy
    from apps.endpoints.batch import jobs, output, reading
    from apps.endpoints.catalogue import demo
    from apps.endpoints.models import BatchJob
    from apps.endpoints.serving import bulk, pipeline, tally
    from apps.ml import codecs
    from apps.ml.income_classifier.base import IncomeClassifier

    demo.ensure_registered()

    def submit() -> BatchJob:
        with path.open("rb") as upload:
            return jobs.submit(
                upload=upload,
                file_name=path.name,
                endpoint_name="income_classifier",
                status=settings.PREDICT_DEFAULT_STATUS,
                version=None,
                log_requests=log_requests,
                target_column=None,
                actor=policy.Actor(user=AnonymousUser(), address="127.0.0.1"),
                send=lambda job_id, count: None,  # no broker: this process runs the pieces
            )

    started = time.perf_counter()
    job = submit()
    submit_s = time.perf_counter() - started
    pieces = job.chunks_total
    walls: list[tuple[int, float]] = []  # (rows, seconds) of each piece after the first

    def piece(index: int) -> None:
        started = time.perf_counter()
        jobs.run_piece(job.pk, index)
        if index:
            walls.append((job.chunks.get(index=index).rows, time.perf_counter() - started))

    piece(0)  # the first: loads the model (a worker's warm-up)
    stages = Stages()
    for owner, attribute, name in [
        (jobs, "_piece_bytes", "storage read"),
        (reading, "read_header", "checks"),
        (reading, "check_field_counts", "checks"),
        (codecs, "frame_from_text", "check cells"),
        (IncomeClassifier, "encode", "encode"),
        (pipeline.LogWriter, "rows", "answers + log rows"),
        (jobs, "_score", "score"),
        (jobs, "_write", "storage write"),
        (jobs, "run_piece", "run_piece"),
        (pipeline, "predict", "model"),
        (bulk, "write_rows", "log write"),
        (tally, "save", "tally"),
    ]:
        stages.wrap(owner, attribute, name)
    stages.wrap_generator(reading.CsvFile, "batches", "parse")
    stages.wrap_generator(output, "csv_stream", "output CSV")
    timed = 1 % pieces
    piece(timed)
    by_stage, cpu_by_stage = dict(stages.seconds), dict(stages.cpu)
    rows_timed = job.chunks.get(index=timed).rows
    profiler = cProfile.Profile()
    if pieces >= 3:  # the third piece, under cProfile (its main thread)
        profiler.enable()
        piece(2)
        profiler.disable()
    for index in range(3, pieces if whole else 0):
        piece(index)
    if pieces < 3:  # a file of fewer pieces: the same piece of a second job of the file
        other = submit()
        profiler.enable()
        jobs.run_piece(other.pk, timed)
        profiler.disable()
    finish_s = None
    if whole:
        started = time.perf_counter()
        jobs.finish(job.pk)
        finish_s = time.perf_counter() - started
        job.refresh_from_db()
        if job.state != BatchJob.State.SUCCEEDED:
            raise RuntimeError(f"the profiled job is {job.state}: {job.error}")
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)
    out.write_text(
        json.dumps(
            {
                "log_requests": log_requests,
                "rows": job.rows_total,
                "pieces": pieces,
                "piece_rows": rows_timed,
                "submit_s": submit_s,
                "walls": walls,
                "stages": by_stage,
                "stages_cpu": cpu_by_stage,
                "finish_s": finish_s,
                "cprofile": text.getvalue(),
            }
        )
    )
    return 0


def profile(path: Path, log_requests: bool, dbs: Databases, tmp: Path) -> dict[str, Any]:
    database_url = dbs.fresh()
    storage = Path(tempfile.mkdtemp(prefix="storage-", dir=tmp))
    out = tmp / f"profile-{int(log_requests)}.json"
    env = dict(
        server_env(database_url),
        DEBUG="0",
        BATCH_JOB_STORAGE_PATH=str(storage),
        DJANGO_SETTINGS_MODULE="server.settings",
    )
    env.pop("CELERY_BROKER_URL", None)
    try:
        subprocess.run(
            [sys.executable, __file__, "--_profile", str(path), "--_out", str(out)]
            + (["--_log"] if log_requests else ["--_whole"]),
            cwd=SERVER,
            env=env,
            check=True,
        )
        result: dict[str, Any] = json.loads(out.read_text())
        return result
    finally:
        dbs.drop(database_url)
        subprocess.run(["rm", "-rf", str(storage)])


# -- the report ----------------------------------------------------------------------------


def variant_name(workers: int, log_requests: bool) -> str:
    letter, plural = ("b", "") if workers == 1 else ("c", "es")
    return f"({letter}) {workers} worker process{plural}, log {str(log_requests).lower()}"


def waits_text(job: Job) -> str:
    if not job.lock_waits:
        return "-"
    top = max(job.lock_waits, key=lambda q: job.lock_waits[q])
    return f"{job.lock_share:.0%}: `{top[:60].replace('|', '/')}`"


def job_table(jobs: list[Job], bare: dict[int, BareModel]) -> list[str]:
    best: dict[tuple[int, int, bool], Job] = {}
    for job in jobs:
        key = (job.rows, job.workers, job.log_requests)
        if key not in best or job.total_s < best[key].total_s:
            best[key] = job
    lines = [
        "| rows | variant | pieces | submit → 202 s | submit → succeeded s | rows/s |"
        " / (a) | (c) / (b) | CPU s workers | CPU s web | CPU s PostgreSQL |"
        " cores used | other load (cores) | idle (cores) |"
        " lock waits (share of samples: top statement) | worker peak RSS MB (each process) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for (rows, workers, log_requests), job in sorted(best.items()):
        one = best.get((rows, 1, log_requests))
        c_over_b = f"{job.rate / one.rate:.2f}" if workers == 2 and one else "-"
        used = cores(job)
        lines.append(
            f"| {rows:,} | {variant_name(workers, log_requests)} | {job.pieces} |"
            f" {job.submit_s:.2f} | {job.total_s:.2f} | {job.rate:,.0f} |"
            f" {job.rate / bare[rows].rate:.2f} | {c_over_b} | {job.cpu_workers:.1f} |"
            f" {job.cpu_web:.1f} | {job.cpu_pg:.1f} | {used:.2f} |"
            f" {job.cpu_other / job.total_s:.2f} |"
            f" {max(0.0, (os.cpu_count() or 1) - job.cpu_machine / job.total_s):.2f} |"
            f" {waits_text(job)} |"
            f" {', '.join(f'{r:.0f}' for r in job.rss_mb)} |"
        )
    return lines


def cpu_us(job: Job) -> float:
    """CPU microseconds per row: the workers', the web server's and PostgreSQL's."""
    return 1e6 * (job.cpu_workers + job.cpu_web + job.cpu_pg) / job.rows


def cores(job: Job) -> float:
    return (job.cpu_workers + job.cpu_web + job.cpu_pg) / job.total_s


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**MISSED**"


def targets(jobs: list[Job], bare: dict[int, BareModel], rows: int, base: int) -> list[str]:
    def best(size: int, workers: int, log_requests: bool) -> Job | None:
        found = [
            j for j in jobs if (j.rows, j.workers, j.log_requests) == (size, workers, log_requests)
        ]
        return min(found, key=lambda j: j.total_s) if found else None

    lines = []
    b = best(rows, 1, False)
    if b:
        ratio = b.rate / bare[rows].rate
        lines.append(
            f"- (b)/(a), log false, {rows:,} rows: {b.rate:,.0f} / {bare[rows].rate:,.0f} ="
            f" **{ratio:.2f}** (target ≥ {TARGET_B_OVER_A}): {verdict(ratio >= TARGET_B_OVER_A)}"
        )
        # What noise cannot change: the CPU the job spends per row against the model's.
        model_us = 1e6 / bare[rows].rate
        lines.append(
            f"  - CPU per row: the job {cpu_us(b):.1f} us"
            f" (workers {1e6 * b.cpu_workers / rows:.1f},"
            f" web {1e6 * b.cpu_web / rows:.1f}, PostgreSQL {1e6 * b.cpu_pg / rows:.1f}), the bare"
            f" model {model_us:.1f} us: {cpu_us(b) / model_us:.1f}x. At 0.7 x (a) the job would"
            f" need {TARGET_B_OVER_A * cpu_us(b) / model_us:.1f} cores, whatever the load"
        )
    for log_requests in (False, True):
        one, two = best(rows, 1, log_requests), best(rows, 2, log_requests)
        if one and two:
            ratio = two.rate / one.rate
            lines.append(
                f"- (c)/(b), log {str(log_requests).lower()}, {rows:,} rows:"
                f" {two.rate:,.0f} / {one.rate:,.0f} = **{ratio:.2f}**"
                f" (target ≥ {TARGET_C_OVER_B}): {verdict(ratio >= TARGET_C_OVER_B)}"
            )
            lines.append(
                f"  - cores the job got: {cores(two):.2f} against {cores(one):.2f}"
                f" ({cores(two) / cores(one):.2f}x); CPU per row {cpu_us(two):.1f} us against"
                f" {cpu_us(one):.1f} us; the rest of the machine took"
                f" {two.cpu_other / two.total_s:.2f} and {one.cpu_other / one.total_s:.2f} cores"
            )
    if base < rows:
        for workers in (1, 2):
            for log_requests in (False, True):
                big, small = best(rows, workers, log_requests), best(base, workers, log_requests)
                if big and small:
                    ratio = max(big.rss_mb) / max(small.rss_mb)
                    lines.append(
                        f"- peak RSS, {variant_name(workers, log_requests)}: {rows:,} rows"
                        f" {max(big.rss_mb):.0f} MB / {base:,} rows {max(small.rss_mb):.0f} MB ="
                        f" **{ratio:.2f}** (target ≤ {TARGET_RSS}): {verdict(ratio <= TARGET_RSS)}"
                    )
    return lines


def profile_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| stage | thread | what | "
        + " | ".join(
            f"log {str(r['log_requests']).lower()}: wall s / CPU s per piece"
            f" ({r['piece_rows']:,} rows)"
            for r in results
        )
        + " |",
        "|---|---|---|" + "---:|" * len(results),
    ]
    for name, thread, what in STAGES:
        cells = [
            f"{r['stages'].get(name, 0.0):.3f} / {r['stages_cpu'].get(name, 0.0):.3f}"
            for r in results
        ]
        lines.append(f"| {name} | {thread} | {what} | {' | '.join(cells)} |")
    model_rates = [
        f"{r['piece_rows'] / r['stages']['model']:,.0f} (on its CPU time:"
        f" {r['piece_rows'] / r['stages_cpu']['model']:,.0f})"
        for r in results
    ]
    lines.append(f"| model inside the piece, rows/s | model thread | | {' | '.join(model_rates)} |")
    for label, key in [
        ("piece, rows/s (the timed one)", None),
        ("pieces one after the other (all but the first), rows/s", "all"),
        ("finish: join of the outputs, s", "finish_s"),
        ("submit in process (checks, ranges, store), s", "submit_s"),
    ]:
        cells = []
        for r in results:
            if key is None:
                cells.append(f"{r['piece_rows'] / r['stages']['run_piece']:,.0f}")
            elif key == "all":
                rows, seconds = map(sum, zip(*r["walls"], strict=True))
                cells.append(f"{rows / seconds:,.0f} ({len(r['walls'])} pieces)")
            else:
                cells.append("-" if r[key] is None else f"{r[key]:.2f}")
        lines.append(f"| {label} | | | {' | '.join(cells)} |")
    return lines


# -- main ----------------------------------------------------------------------------------

HOT_PATH = [
    f"backend/server/apps/endpoints/{name}.py"
    for name in (
        "batch/jobs",
        "batch/tasks",
        "batch/reading",
        "batch/output",
        "serving/pipeline",
        "serving/bulk",
        "serving/tally",
    )
] + ["backend/server/apps/ml/compiled.py", "backend/server/server/settings.py"]


def code_state() -> str:
    """The commit measured, and which files of the jobs' path differed from it (the
    working tree is what runs)."""
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    changed = subprocess.run(
        [*git, "diff", "--name-only", "HEAD", "--", *HOT_PATH], capture_output=True, text=True
    ).stdout.split()
    names = ", ".join(Path(c).name for c in changed)
    return f"commit {head.stdout.strip()}" + (f" + uncommitted {names}" if changed else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100k rows, no RSS comparison")
    parser.add_argument("--rss-base", type=int, default=100_000, help="the smaller file")
    parser.add_argument("--repeat", type=int, default=1, help="jobs per variant, best kept")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    parser.add_argument("--redis-db", type=int, default=9)
    parser.add_argument(
        "--log", choices=["both", "false", "true"], default="both", help="log_requests variants"
    )
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--profile-only", action="store_true", help="no jobs, the profile")
    parser.add_argument("--keep-data", action="store_true", help="keep the CSV files written")
    parser.add_argument("--_profile", help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    parser.add_argument("--_log", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_whole", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._profile:
        return profile_main(Path(args._profile), args._log, Path(args._out), args._whole)
    if args.quick:
        args.rows = 100_000
    command = "python bench/jobs_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    given = args.database_url if args.database_url.startswith("postgres") else None
    measured = code_state()
    logs = {"both": (False, True), "false": (False,), "true": (True,)}[args.log]
    sizes = sorted({args.rss_base, args.rows}) if args.rss_base < args.rows else [args.rows]

    OUT.mkdir(parents=True, exist_ok=True)
    for model, only in [("random_forest.joblib", "adult"), ("diabetes.joblib", "sklearn")]:
        if not (ARTIFACTS / model).exists():  # as `make serve` would train them
            train = [sys.executable, str(REPO / "research" / "train.py")]
            subprocess.run([*train, "--out", str(ARTIFACTS), "--only", only], check=True)
    written = [p for p in (OUT / f"adult_{n}.csv" for n in [*sizes, WARMUP_ROWS]) if not p.exists()]
    import django

    # This process: the bare model, on the settings a server gets (its own SQLite in memory).
    os.environ.update(server_env("sqlite://:memory:"), DJANGO_SETTINGS_MODULE="server.settings")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core for the bare model
    django.setup()
    from django.conf import settings

    tmp = Path(tempfile.mkdtemp(prefix="jobs-bench-"))
    dbs: Databases | None = None
    broker = Broker(args.redis_db)
    finished: list[Job] = []
    bare: dict[int, BareModel] = {}
    chunked: dict[int, ChunkedModel] = {}
    results: list[dict[str, Any]] = []

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        dbs = Databases(given, server_env(""))
        for size in sizes:
            path = make_csv(size)
            make_csv(WARMUP_ROWS)
            log(f"{size:,} rows ({path.stat().st_size / 1e6:.0f} MB): (a) bare model")
            bare[size] = BareModel(path)
            chunked[size] = ChunkedModel(bare[size], settings.BATCH_CHUNK_ROWS)
            log(
                f"  (a) {bare[size].rate:,.0f} rows/s; (a') {chunked[size].rate:,.0f} rows/s"
                f" ({chunked[size].engine})"
            )
            for _ in range(0 if args.profile_only else args.repeat):
                for workers in (1, 2):
                    for log_requests in logs:
                        log(f"{size:,} rows: {variant_name(workers, log_requests)}")

                        def before(size: int = size) -> None:
                            bare[size].time_once()
                            chunked[size].time_once()

                        job = run_job(path, size, workers, log_requests, dbs, broker, tmp, before)
                        finished.append(job)
                        log(
                            f"  {job.total_s:.2f} s, {job.rate:,.0f} rows/s"
                            f" (a: {bare[size].rate:,.0f}), submit {job.submit_s:.2f} s,"
                            f" CPU workers {job.cpu_workers:.1f} s, PostgreSQL"
                            f" {job.cpu_pg:.1f} s, other load {job.cpu_other / job.total_s:.2f},"
                            f" locks {job.lock_share:.0%},"
                            f" RSS {[round(r) for r in job.rss_mb]} MB"
                        )
        if not args.no_profile:
            for log_requests in logs:
                log(f"profile: jobs.run_piece in process, log {str(log_requests).lower()}")
                results.append(profile(make_csv(args.rows), log_requests, dbs, tmp))
    finally:
        if dbs is not None:
            dbs.drop_all()
        removed = broker.cleanup()
        log(f"cleaned up: databases, {removed} Redis keys, {tmp}")
        subprocess.run(["rm", "-rf", str(tmp)])
        if not args.keep_data:
            for p in written:
                p.unlink(missing_ok=True)

    rows = args.rows
    if code_state() != measured:
        measured += f" (at the end: {code_state()})"
    lines = [
        f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {measured};"
        f" PostgreSQL, Redis broker; BATCH_JOB_CHUNK_ROWS={settings.BATCH_JOB_CHUNK_ROWS:,},"
        f" BATCH_CHUNK_ROWS={settings.BATCH_CHUNK_ROWS:,})",
        "",
        "| rows | (a) bare model rows/s (scikit-learn, whole file, 1 core) |"
        f" (a') as a piece calls it ({settings.BATCH_CHUNK_ROWS:,}-row calls) rows/s |"
        " (a') engine |",
        "|---:|---:|---:|---|",
        *(
            f"| {n:,} | {bare[n].rate:,.0f} | {chunked[n].rate:,.0f} | {chunked[n].engine} |"
            for n in sizes
        ),
        "",
        *job_table(finished, bare),
        "",
        *targets(finished, bare, rows, args.rss_base),
    ]
    if results:
        lines += [
            "",
            f"Profile: `jobs.run_piece` in one process on a job of the {rows:,}-row file"
            " (seconds of wall time per stage, for one piece; threads overlap):",
            "",
            *profile_table(results),
        ]
        profile_text = "\n\n".join(
            f"## log_requests={r['log_requests']}\n\n{r['cprofile']}" for r in results
        )
        (OUT / "jobs_profile.txt").write_text(profile_text)
    table = "\n".join(lines)
    print("\n" + table)
    save("jobs_results", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
