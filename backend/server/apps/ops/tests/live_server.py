"""A live server for end-to-end tests: ``bin/serve`` (gunicorn with the production
settings) in its own process group, talking to the test database."""

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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

SERVE = Path(settings.BASE_DIR) / "bin" / "serve"


def current_database_url(name: str | None = None) -> str:
    """The test database's URL; on PostgreSQL, ``name`` names another database of its
    server."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{name or db['NAME']}"


def multipart(
    fields: dict[str, str], file_field: str, filename: str, content: bytes, content_type: str
) -> tuple[bytes, str]:
    """A multipart/form-data body of ``fields`` and one file, and its Content-Type."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
        f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
        + content
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    process: subprocess.Popen[bytes]  # gunicorn's master, in a process group of its own

    def __init__(self, port: int, log: Path) -> None:
        self.base, self.log = f"http://127.0.0.1:{port}", log
        self.port = port

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        data = json.dumps(body).encode() if body is not None else None
        return self.call_raw(
            method, path, data, {"Content-Type": "application/json", **(headers or {})}
        )

    def call_raw(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers=headers
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


def launch(
    artifacts_dir: Path, tmp_path: Path, database_url: str | None = None, **env_overrides: str
) -> Server:
    """``bin/serve`` started, not yet answering (``Server.wait_until_alive``; ``halt`` stops
    it), on ``PORT`` if given (default: a free port); ``database_url`` defaults to the test
    database."""
    port, log = int(env_overrides.get("PORT") or free_port()), tmp_path / "server.log"
    env = {
        **os.environ,
        "SECRET_KEY": "production-test-key",
        "DEBUG": "0",
        "DATABASE_URL": database_url or current_database_url(),
        "MODEL_ARTIFACTS_PATH": str(artifacts_dir),
        "ML_DEMO_MODELS": "0",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "2",
        "STATIC_ROOT": str(tmp_path / "static"),
        "PYTHON": sys.executable,
        # The bounds production sets on anonymous clients off, as the benchmarks turn them
        # off: these tests send many requests from one address and test something else;
        # test_anonymous_bounds.py tests the bounds (a test may set them here too).
        "ANONYMOUS_PREDICT_THROTTLE_RATE": "",
        "ANONYMOUS_BATCH_MAX_UPLOAD_BYTES": "0",
        "ANONYMOUS_BATCH_JOB_MAX_UPLOAD_BYTES": "0",
        "BATCH_JOB_MAX_ACTIVE": "0",
        "BATCH_JOB_MAX_ACTIVE_ROWS": "0",
        **env_overrides,
    }
    # The production settings, not the tests'; and the metrics folder gunicorn.conf.py
    # picks itself, as in a plain `make serve`.
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the browser tests' own, not the server's
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(SERVE)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = Server(port, log)
    running.process = process
    return running


def halt(*servers: Server) -> None:
    """gunicorn and its workers: a graceful stop (SIGTERM), as an orchestrator does; a
    worker that does not finish in time is killed so a test never hangs on it. Several
    servers are told to stop at once, then waited for: each takes a second or two."""
    for running in servers:
        with suppress(ProcessLookupError):  # it may have exited: keep the real failure
            os.killpg(running.process.pid, signal.SIGTERM)
    for running in servers:
        try:
            running.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(running.process.pid, signal.SIGKILL)
            running.process.wait(timeout=15)


@contextmanager
def serving(
    artifacts_dir: Path, tmp_path: Path, database_url: str | None = None, **env_overrides: str
) -> Iterator[Server]:
    """``bin/serve`` (``launch``) until the block ends, answering when the block starts."""
    running = launch(artifacts_dir, tmp_path, database_url, **env_overrides)
    try:
        running.wait_until_alive(running.process)
        yield running
    finally:
        halt(running)


@contextmanager
def serving_together(
    *hosts: tuple[Path, Path, dict[str, str]], database_url: str | None = None
) -> Iterator[list[Server]]:
    """Several ``bin/serve`` (``launch``), one per ``(artifacts_dir, tmp_path, env)``,
    started at once and all answering when the block starts, stopped at once when it ends
    (``halt``). One after the other, their start-ups (seconds each: two Django set-ups and
    collectstatic) and their stops added up."""
    running: list[Server] = []
    try:
        for artifacts_dir, tmp_path, env_overrides in hosts:
            running.append(launch(artifacts_dir, tmp_path, database_url, **env_overrides))
        for server in running:
            server.wait_until_alive(server.process)
        yield running
    finally:
        halt(*running)


def upload_wine(server: Server, token: str) -> tuple[Any, dict[str, Any]]:
    """Register a wine classifier (skops, fitted here) as endpoint ``wine`` in production
    through ``POST /api/v1/mlalgorithms`` with an operator's ``token``; the model and the
    answer's card."""
    import io

    import skops.io

    from apps.ml.tests import models

    model = models.wine_classifier()
    buffer = io.BytesIO()
    skops.io.dump(model, buffer)
    fields = {"endpoint": "wine", "name": "lr", "version": "1", "status": "production"}
    body, content_type = multipart(
        fields, "artifact", "wine.skops", buffer.getvalue(), "application/octet-stream"
    )
    headers = {"Content-Type": content_type, "Authorization": f"Token {token}"}
    status, _, answer = server.call_raw("POST", "/api/v1/mlalgorithms", body, headers)
    assert status == 201, answer
    return model, json.loads(answer)


def production_superuser(name: str, password: str) -> None:
    """A superuser the server can log in: its password hashed as the production settings
    hash (the tests' settings use a fast hasher the server would not know)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    user = get_user_model().objects.create_superuser(name, f"{name}@example.com", password=None)
    user.password = PBKDF2PasswordHasher().encode(password, f"{name}-test-salt")
    user.save(update_fields=["password"])
