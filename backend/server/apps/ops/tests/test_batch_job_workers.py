"""Batch jobs on real Celery workers: gunicorn (``bin/serve``) takes the file over HTTP,
``celery -A server worker`` (as ``make worker`` starts it) scores it, both on the test
database and one storage folder, through Redis.

- A job scored by a worker: every row once, in order, each logged once.
- A worker killed (SIGKILL, the whole process group) in the middle of a piece, and another
  started: the job succeeds, every row exactly once; the piece killed was scored again.
- The broker stopped in the middle of a job (a private redis-server without persistence:
  its queue is lost) and started again on the same port: the job succeeds all the same.

What brings the lost pieces back is ``tasks.ResumeOnConnect``: each worker, when it
connects to the broker (its start, a reconnect), sends ``resume_stalled`` for every
unfinished job. Without it, kombu's Redis transport gives an unacknowledged task back only
at one of its sweeps after the visibility timeout: when a worker connects, then every
~100 s (``unacked_restore_interval`` 10 s x ``unacked_restore_throttle`` 10). Measured
without it (visibility timeout 5 s, 100 pieces): a second worker started at once finished
the job 93 s after the kill; started 6 s after it, 24 s. With the default 600 s, the piece
would wait 10 to 12 minutes. A queue lost with its broker never comes back at all.

Tests 1 and 2 use a database of the shared Redis at 127.0.0.1:6379 (11 to 14, the first
empty one, claimed by a key and emptied afterwards); test 3 a redis-server of its own.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from apps.endpoints.models import BatchJobChunk, MLRequest
from apps.endpoints.tests.apis.test_batch_predict import adult_csv
from apps.ml.registry import MLRegistry
from apps.ops.tests.live_server import (
    Server,
    current_database_url,
    free_port,
    multipart,
    serving,
)

pytestmark = pytest.mark.django_db(transaction=True)

HOST = "127.0.0.1"
SHARED_REDIS_PORT = 6379
# Databases of the shared Redis these tests may take, one per run (another run, on the
# other database, may be going on at the same time): the first empty one, claimed by a key.
REDIS_DATABASES = range(11, 15)
CLAIM_KEY = "ml_pipeline.tests.batch_job_workers"
CHUNK_ROWS = 5
ROWS = 100  # in 20 pieces: a second or two of work for one worker
PIECES = ROWS // CHUNK_ROWS


# -- Redis ---------------------------------------------------------------------------------


def _redis(port: int, db: int = 0) -> Any:
    import redis

    return redis.Redis(HOST, port, db=db, socket_connect_timeout=1, socket_timeout=5)


def _answers(port: int) -> bool:
    import redis

    try:
        return bool(_redis(port).ping())
    except redis.RedisError:
        return False


@contextmanager
def shared_redis_database() -> Iterator[str]:
    """A broker URL on a database of the shared Redis that nobody else uses, emptied
    afterwards (its keys are all this test's)."""
    if not _answers(SHARED_REDIS_PORT):
        pytest.skip(f"no Redis at {HOST}:{SHARED_REDIS_PORT} (.ci/run starts one)")
    for db in REDIS_DATABASES:
        client = _redis(SHARED_REDIS_PORT, db)
        if client.dbsize() == 0 and client.set(CLAIM_KEY, os.getpid(), nx=True, ex=600):
            break
    else:
        pytest.skip(f"Redis databases {REDIS_DATABASES} are all in use")
    try:
        yield f"redis://{HOST}:{SHARED_REDIS_PORT}/{db}"
    finally:
        client.flushdb()  # this database was claimed empty: only this test's keys


class PrivateRedis:
    """A redis-server of the test's own on a free port, without persistence: stopping it
    loses its queues, as a broker restarted without its data does."""

    def __init__(self, folder: Path) -> None:
        self.port, self.folder = free_port(), folder
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", HOST]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while not _answers(self.port):
            assert self.process.poll() is None, (self.folder / "redis.log").read_text()
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, group=True)
            self.process = None


# -- processes -----------------------------------------------------------------------------


def stop(process: subprocess.Popen[bytes], *, group: bool = False) -> None:
    """SIGTERM to the process (to its group with ``group``); SIGKILL to its group if it
    has not exited 15 s later."""
    with suppress(ProcessLookupError):
        if group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()  # a Celery worker: a warm shutdown, its pool with it
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def job_env(broker_url: str, queue: str, storage: Path, **extra: str) -> dict[str, str]:
    """What the web server and the workers share: the broker, the queue, the storage."""
    return {
        "CELERY_BROKER_URL": broker_url,
        "BATCH_JOB_QUEUE": queue,
        "BATCH_JOB_STORAGE_PATH": str(storage),
        "BATCH_JOB_CHUNK_ROWS": str(CHUNK_ROWS),
        # A killed worker's piece is sent again once its lease lapses (30 s as shipped).
        "BATCH_JOB_LEASE_SECONDS": "4",
        "BATCH_JOB_HEARTBEAT_SECONDS": "0.5",
        # scikit-learn, as in the other tests: compiling the models takes seconds per process
        "ML_COMPILED_INFERENCE": "0",
        **extra,
    }


def serve(stack: ExitStack, artifacts_dir: Path, tmp_path: Path, shared: dict[str, str]) -> Server:
    """gunicorn until ``stack`` closes: one worker (it only takes the file and answers
    about the job), no migrations (the test database has them)."""
    return stack.enter_context(
        serving(artifacts_dir, tmp_path, **shared, WEB_CONCURRENCY="1", SKIP_MIGRATE="1")
    )


class Worker:
    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process, self.log = process, log

    def wait_until_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while " ready." not in self.log.read_text():
            assert self.process.poll() is None, f"the worker exited:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, f"the worker is not ready:\n{self.log.read_text()}"
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to the whole worker, its main process and the pool's; then a moment for
        the database to see their connections close (a commit under way ends either way)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        time.sleep(0.3)

    def stop_soon(self) -> None:
        """A warm shutdown (SIGTERM to the main process: running tasks finish), without
        waiting: the worker stops while gunicorn does (``celery_worker`` waits for it)."""
        with suppress(ProcessLookupError):
            self.process.terminate()


@contextmanager
def celery_worker(
    name: str, artifacts_dir: Path, tmp_path: Path, shared: dict[str, str]
) -> Iterator[Worker]:
    """``celery -A server worker`` as ``make worker`` starts it (the production settings,
    the test database), one prefork process, in its own process group."""
    env = {
        **os.environ,
        "SECRET_KEY": "production-test-key",
        "DEBUG": "0",
        "DATABASE_URL": current_database_url(),
        "MODEL_ARTIFACTS_PATH": str(artifacts_dir),
        "ML_DEMO_MODELS": "0",
        **shared,
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / f"{name}.log"
    command = [sys.executable, "-m", "celery", "-A", "server", "worker", "--loglevel", "INFO"]
    command += ["--queues", shared["BATCH_JOB_QUEUE"], "--concurrency", "1"]
    command += ["--pool", "prefork", "--hostname", f"{name}@%h"]
    # scikit-learn imported before the pool forks rather than by the first piece (seconds on
    # a busy machine, while gunicorn starts): what the tests wait for, not what they test
    command += ["--include", "sklearn.ensemble,sklearn.pipeline,sklearn.compose"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Worker(process, log)
    finally:
        stop(process)


# -- the API -------------------------------------------------------------------------------


def submit(server: Server, text: str, **fields: str) -> dict[str, Any]:
    body, content_type = multipart(fields, "file", "adult.csv", text.encode(), "text/csv")
    status, headers, answer = server.call_raw(
        "POST",
        "/api/v1/batch-jobs",
        body,
        {"Content-Type": content_type},
    )
    assert status == 202, answer
    job: dict[str, Any] = json.loads(answer)
    assert headers["Location"] == job["url"] and job["token"]
    return job


def look(server: Server, job: dict[str, Any]) -> dict[str, Any]:
    status, _, body = server.call(
        "GET", urlsplit(job["url"]).path, headers={"X-Job-Token": job["token"]}
    )
    assert status == 200, body
    seen: dict[str, Any] = json.loads(body)
    return seen


def wait_for(
    server: Server, job: dict[str, Any], until: Any, seconds: float, logs: list[Path]
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen = look(server, job)
        if until(seen):
            return seen
        time.sleep(0.1)
    tails = "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"not reached in {seconds} s: {seen}\n{tails}")


def ended(seen: dict[str, Any]) -> bool:
    return seen["state"] in ("succeeded", "failed", "cancelled")


def assert_every_row_once_in_order(
    server: Server, job: dict[str, Any], text: str, *, logged: bool = True
) -> None:
    """The result has the file's rows, each once, in order; each is one MLRequest when
    the job was ``logged``."""
    status, _, body = server.call(
        "GET", urlsplit(job["url"]).path + "/result", headers={"X-Job-Token": job["token"]}
    )
    assert status == 200, body
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    uploaded = list(csv.DictReader(io.StringIO(text)))
    assert [r["id"] for r in rows] == [r["id"] for r in uploaded]
    assert all(r["label"] for r in rows)
    if not logged:
        assert "request_id" not in rows[0] and MLRequest.objects.count() == 0
        return
    ids = [int(r["request_id"]) for r in rows]
    assert len(set(ids)) == len(uploaded)
    assert MLRequest.objects.filter(pk__in=ids).count() == len(uploaded)
    assert MLRequest.objects.count() == len(uploaded)  # none logged twice, none left over


# -- the tests -----------------------------------------------------------------------------


@pytest.fixture
def queue() -> str:
    return f"ml_pipeline.tests.{uuid.uuid4().hex[:12]}"


def test_a_worker_scores_a_job_every_row_once_in_order(
    demo_registry: MLRegistry, artifacts_dir: Path, tmp_path: Path, queue: str
) -> None:
    text = adult_csv(60)
    # Workers in the outer stack: each is told to stop before gunicorn is, and waited for
    # after, so that both stop at once.
    with shared_redis_database() as broker, ExitStack() as workers, ExitStack() as stack:
        shared = job_env(broker, queue, tmp_path / "batch-jobs")
        worker = workers.enter_context(celery_worker("one", artifacts_dir, tmp_path, shared))
        server = serve(stack, artifacts_dir, tmp_path, shared)
        stack.callback(worker.stop_soon)
        worker.wait_until_ready()
        job = submit(server, text, log_requests="true")
        assert job["state"] == "queued" and job["chunks_total"] == 60 // CHUNK_ROWS
        done = wait_for(server, job, ended, 30, [worker.log])
        assert done["state"] == "succeeded", done
        assert (done["rows_done"], done["chunks_done"]) == (60, 60 // CHUNK_ROWS)
        assert_every_row_once_in_order(server, job, text)


def test_a_worker_killed_mid_job_leaves_its_piece_to_the_next_one(
    demo_registry: MLRegistry, artifacts_dir: Path, tmp_path: Path, queue: str
) -> None:
    text = adult_csv(ROWS)
    with shared_redis_database() as broker, ExitStack() as workers, ExitStack() as stack:
        # Redis would give an unacknowledged task to another worker after 5 s (not 600).
        shared = job_env(broker, queue, tmp_path / "batch-jobs", BATCH_JOB_VISIBILITY_TIMEOUT="5")
        first = workers.enter_context(celery_worker("first", artifacts_dir, tmp_path, shared))
        server = serve(stack, artifacts_dir, tmp_path, shared)
        first.wait_until_ready()
        job = submit(server, text, log_requests="true")
        chunks = BatchJobChunk.objects.filter(job_id=job["id"])
        # Two pieces done and one started (tried, not done): killed in the middle of it.
        in_flight = chunks.filter(attempts__gt=0, done=False)
        deadline = time.monotonic() + 30
        while not (chunks.filter(done=True).count() >= 2 and in_flight.exists()):
            assert time.monotonic() < deadline, first.log.read_text()
            time.sleep(0.02)
        first.kill()
        killed = list(in_flight.values_list("index", flat=True))  # empty if it just committed
        at_kill = look(server, job)
        assert at_kill["state"] == "running" and at_kill["chunks_done"] < PIECES
        second = workers.enter_context(celery_worker("second", artifacts_dir, tmp_path, shared))
        stack.callback(second.stop_soon)
        done = wait_for(server, job, ended, 30, [first.log, second.log])
        assert done["state"] == "succeeded", done
        assert done["chunks_done"] == PIECES
        assert_every_row_once_in_order(server, job, text)
        # The piece killed was scored again, by the second worker; every other one once.
        tried = dict(chunks.values_list("index", "attempts"))
        assert all(tried[i] == 2 for i in killed), (killed, tried)
        assert all(n == 1 for i, n in tried.items() if i not in killed), (killed, tried)


def test_a_job_survives_its_broker_restarted_without_its_queue(
    demo_registry: MLRegistry, artifacts_dir: Path, tmp_path: Path, queue: str
) -> None:
    if not shutil.which("redis-server"):
        pytest.skip("no redis-server to run a broker of the test's own")
    text = adult_csv(ROWS)
    broker = PrivateRedis(tmp_path / "redis")
    with ExitStack() as workers, ExitStack() as stack:
        workers.callback(broker.stop)
        broker.start()
        shared = job_env(broker.url, queue, tmp_path / "batch-jobs")
        worker = workers.enter_context(celery_worker("worker", artifacts_dir, tmp_path, shared))
        server = serve(stack, artifacts_dir, tmp_path, shared)
        stack.callback(worker.stop_soon)
        worker.wait_until_ready()
        job = submit(server, text, log_requests="true")
        # Stopped as soon as two pieces are done (watched in the database: polling the API
        # every 0.1 s, a fast machine had scored all twenty before the broker stopped).
        done_pieces = BatchJobChunk.objects.filter(job_id=job["id"], done=True)
        deadline = time.monotonic() + 30
        while done_pieces.count() < 2:
            assert time.monotonic() < deadline, worker.log.read_text()
            time.sleep(0.02)
        broker.stop()  # SIGTERM; no persistence: the queue is gone
        at_stop = look(server, job)
        assert at_stop["state"] == "running" and at_stop["chunks_done"] < PIECES
        broker.start()  # empty: the worker reconnects to nothing queued
        done = wait_for(server, job, ended, 30, [worker.log])
        assert done["state"] == "succeeded", done
        assert worker.process.poll() is None  # the same worker, reconnected
        assert_every_row_once_in_order(server, job, text)
