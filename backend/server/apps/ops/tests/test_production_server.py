"""The production command end to end: gunicorn workers in other processes serve a model
version registered with ``manage.py register_model`` while they run, without a restart."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families
from sklearn.tree import DecisionTreeClassifier

from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD, train_tiny_artifact

SERVE = Path(settings.BASE_DIR) / "bin" / "serve"


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    def __init__(self, port: int, log: Path) -> None:
        self.base, self.log = f"http://127.0.0.1:{port}", log

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path, data=data, method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def wait_until_alive(self, process: subprocess.Popen[bytes], seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert process.poll() is None, f"server exited:\n{self.log.read_text()}"
            try:
                if self.call("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not up after {seconds} s:\n{self.log.read_text()}")


@pytest.fixture
def server(registry: MLRegistry, artifacts_dir: Path, tmp_path: Path) -> Iterator[Server]:
    port, log = free_port(), tmp_path / "server.log"
    env = dict(
        os.environ,
        SECRET_KEY="production-test-key", DEBUG="0", DATABASE_URL=database_url(),
        MODEL_ARTIFACTS_PATH=str(artifacts_dir), ML_DEMO_MODELS="0",
        HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="2", GUNICORN_THREADS="2",
        STATIC_ROOT=str(tmp_path / "static"), PYTHON=sys.executable,
    )
    # The production settings, not the tests'; and the metrics folder gunicorn.conf.py
    # picks itself, as in a plain `make serve`.
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(SERVE)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = Server(port, log)
    try:
        running.wait_until_alive(process)
        yield running
    finally:
        os.killpg(process.pid, signal.SIGINT)  # gunicorn and its workers, quick shutdown
        process.wait(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_a_running_server_serves_a_version_registered_with_the_command_without_restart(
    server: Server, tmp_path: Path
) -> None:
    status, _, body = server.call("POST", "/api/v1/income_classifier/predict", SAMPLE_RECORD)
    assert status == 404 and json.loads(body)["error"]["code"] == "endpoint_not_found"

    trained, _ = train_tiny_artifact(
        tmp_path / "handed_over", "tree.joblib",
        estimator=DecisionTreeClassifier(max_depth=4, random_state=0),
    )
    call_command(
        "register_model", str(trained), "--name", "decision tree", "--version", "2.0.0",
        "--status", "production",
    )

    answers = [
        server.call("POST", "/api/v1/income_classifier/predict", SAMPLE_RECORD,
                    headers={"X-Request-ID": f"live-{i}"})
        for i in range(6)  # two workers: both get some of them
    ]
    for status, _headers, body in answers:
        assert status == 200, body
        assert json.loads(body)["algorithm"]["name"] == "decision tree"
    assert [h["X-Request-ID"] for _, h, _ in answers] == [f"live-{i}" for i in range(6)]

    status, _, body = server.call("GET", "/readyz")
    assert status == 200, body
    [card] = json.loads(body)["algorithms"]
    assert card["name"] == "decision tree" and card["ok"]

    status, _, body = server.call("GET", "/metrics")
    counted = {
        s.labels["algorithm"]: s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples if s.name == "ml_predictions_total"
    }
    assert counted == {"decision tree": 6}  # added up over both workers

    status, _, body = server.call("GET", "/static/admin/css/base.css")
    assert status == 200  # collected and served by whitenoise

    lines = server.log.read_text().splitlines()
    assert any(
        "[live-3] server.access" in line and '"POST /api/v1/income_classifier/predict" 200'
        in line for line in lines
    )
