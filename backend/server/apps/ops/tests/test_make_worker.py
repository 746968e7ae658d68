"""``make worker`` itself, the Makefile's command line, as an operator runs it on a host.

- The node name it gives: ``worker-<pid>@<host>``, the pid being the worker's own, unless
  ``WORKER_NAME`` says otherwise (a make whose interpreter prints its arguments: instant).
- Two ``make worker`` on one host against RabbitMQ: both stay up and share a batch job.
  Each worker holds an exclusive queue named after its node name (``<name>.celery.pidbox``,
  Celery's remote control), so with one name for both, RabbitMQ refused the second with
  ``ResourceLocked`` and it exited. Redis has no exclusive queues: there the clash went
  unnoticed.

make runs with ``-o .venv/.installed-requirements`` (requirements.txt may be newer than
the venv's stamp: make would reinstall the venv) and ``DEMO_MODELS=`` (no demo models to
train; the workers load none, ``ML_DEMO_MODELS=0``), and ``PY`` is the tests' interpreter.
Everything the recipe runs is the Makefile's.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from apps.endpoints.tests.apis.test_batch_predict import adult_csv
from apps.ml.registry import MLRegistry
from apps.ops.tests.live_server import current_database_url
from apps.ops.tests.test_batch_job_workers import (
    HOST,
    ROWS,
    Worker,
    assert_every_row_once_in_order,
    ended,
    job_env,
    serve,
    stop,
    submit,
    wait_for,
)

REPO = Path(settings.BASE_DIR).parents[1]
RABBITMQ_URL = f"amqp://guest:guest@{HOST}:5672//"


def make_worker_command(**variables: str) -> list[str]:
    """``make worker`` in the repository, its prerequisites taken as made (see above)."""
    command = ["make", "--no-print-directory", "-C", str(REPO)]
    command += ["-o", ".venv/.installed-requirements", "DEMO_MODELS=", f"PY={sys.executable}"]
    command += [f"{name}={value}" for name, value in variables.items()]
    return [*command, "worker"]


def node_name_and_pid(**env: str) -> tuple[str, int]:
    """The node name ``make worker`` passes with ``-n``, and the pid of the process it
    passes it to: the interpreter prints both instead of starting Celery."""
    show = f'{sys.executable} -c "import os, sys; print(os.getpid(), *sys.argv[1:])"'
    environment = {k: v for k, v in os.environ.items() if k != "WORKER_NAME"}
    done = subprocess.run(
        make_worker_command(PY=show),
        env={**environment, "CELERY_BROKER_URL": "amqp://unused//", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pid, *arguments = done.stdout.splitlines()[-1].split()  # after the line make echoes
    assert "-n" in arguments, f"make worker names no node: {arguments}"
    return arguments[arguments.index("-n") + 1], int(pid)


def test_make_worker_names_each_worker_after_its_own_pid_unless_worker_name_is_set() -> None:
    name, pid = node_name_and_pid()
    # The pid is the worker's own (the recipe execs it): unique on the host while it runs.
    assert name == f"worker-{pid}@%h"
    assert node_name_and_pid(WORKER_NAME="batch-a@%h")[0] == "batch-a@%h"


# -- two workers on one host, through RabbitMQ ---------------------------------------------


@contextmanager
def rabbitmq(queue: str) -> Iterator[str]:
    """The shared RabbitMQ's URL (or a skip, except where CI_REQUIRE_RABBITMQ=1: .ci/run sets
    it); the test's queue and its exchange deleted
    afterwards: both are durable and outlive the workers, whose own queues (the pidbox's)
    go with their connections."""
    import amqp  # the client kombu's amqp:// transport uses

    def connect() -> Any:
        connection = amqp.Connection(
            f"{HOST}:5672", userid="guest", password="guest", connect_timeout=2
        )
        connection.connect()
        return connection

    try:
        connect().close()
    except OSError as exc:
        reason = f"no RabbitMQ at {HOST}:5672 (guest/guest): {exc}"
        if os.environ.get("CI_REQUIRE_RABBITMQ") == "1":
            pytest.fail(f"{reason} (CI_REQUIRE_RABBITMQ=1: this run must not skip it)")
        pytest.skip(reason)
    try:
        yield RABBITMQ_URL
    finally:
        connection = connect()
        try:
            channel = connection.channel()
            channel.queue_delete(queue)
            channel.exchange_delete(queue)
        finally:
            connection.close()


class MadeWorker(Worker):
    """A worker ``make worker`` started: ``process`` is make, the worker its only child.
    SIGTERM to make reaches the worker (make passes it on and waits for it)."""

    def pid(self) -> int:
        [child] = (
            Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        )
        return int(child)

    def node_name(self) -> str:
        found = re.search(r"\] (\S+) ready\.$", self.log.read_text(), re.MULTILINE)
        assert found, self.log.read_text()
        return found.group(1)

    def pieces_scored(self) -> int:
        return len(re.findall(r"score_piece\[\S+\] succeeded", self.log.read_text()))


@contextmanager
def make_worker(
    label: str, artifacts_dir: Path, tmp_path: Path, shared: dict[str, str]
) -> Iterator[MadeWorker]:
    """``make worker`` with the production settings on the test database, one process."""
    env = {
        **os.environ,
        "SECRET_KEY": "production-test-key",
        "DEBUG": "0",
        "DATABASE_URL": current_database_url(),
        "MODEL_ARTIFACTS_PATH": str(artifacts_dir),
        "ML_DEMO_MODELS": "0",
        "WORKER_CONCURRENCY": "1",
        **shared,
    }
    for name in ("DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR", "WORKER_NAME"):
        env.pop(name, None)
    log = tmp_path / f"{label}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            make_worker_command(),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield MadeWorker(process, log)
    finally:
        stop(process)


@pytest.fixture
def queue() -> str:
    return f"ml_pipeline.tests.{uuid.uuid4().hex[:12]}"


@pytest.mark.django_db(transaction=True)
def test_two_make_workers_on_one_host_both_run_and_share_a_job_through_rabbitmq(
    demo_registry: MLRegistry, artifacts_dir: Path, tmp_path: Path, queue: str
) -> None:
    text = adult_csv(ROWS)
    with rabbitmq(queue) as broker, ExitStack() as workers, ExitStack() as stack:
        shared = job_env(broker, queue, tmp_path / "batch-jobs")
        first = workers.enter_context(make_worker("first", artifacts_dir, tmp_path, shared))
        second = workers.enter_context(make_worker("second", artifacts_dir, tmp_path, shared))
        server = serve(stack, artifacts_dir, tmp_path, shared)
        for worker in (first, second):
            stack.callback(worker.stop_soon)
            worker.wait_until_ready()
        host = socket.gethostname()
        names = [worker.node_name() for worker in (first, second)]
        assert names == [f"worker-{first.pid()}@{host}", f"worker-{second.pid()}@{host}"]

        job = submit(server, text, log_requests="true")
        done = wait_for(server, job, ended, 30, [first.log, second.log])
        assert done["state"] == "succeeded", done
        assert_every_row_once_in_order(server, job, text)
        # Both still up, and both scored: RabbitMQ deals a queue's messages out in turn.
        assert first.process.poll() is None and second.process.poll() is None
        assert first.pieces_scored() > 0 and second.pieces_scored() > 0
        assert first.pieces_scored() + second.pieces_scored() == done["chunks_done"]
