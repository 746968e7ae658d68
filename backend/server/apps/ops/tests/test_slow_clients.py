"""Slow clients (slowloris) and the nginx configuration shipped for production,
deploy/nginx/ml_pipeline.conf, run as shipped by deploy/nginx/local.py (``make proxy``).

The attack: clients that send a request's headers, then its body a byte at a time. Each one
holds a gunicorn thread until its body is complete, so a few of them starve everyone. In
front of gunicorn, nginx reads bodies whole before passing a request on, so the same
clients wait in nginx and gunicorn's threads stay free for everyone else.

Needs nginx (Debian's package). Without it these tests skip, except where
CI_REQUIRE_NGINX=1 (.ci/run sets it): there a missing nginx fails them.
"""

from __future__ import annotations

import csv
import http.client
import importlib.util
import io
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from django.conf import settings

from apps.endpoints.tests.factories import algorithm
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD
from apps.ops.tests.live_server import free_port, serving

REPO = Path(settings.BASE_DIR).parents[1]
CONF = REPO / "deploy" / "nginx" / "ml_pipeline.conf"
PREDICT = "/api/v1/income_classifier/predict"
# A small server, so a few slow clients are enough to hold all of it.
WORKERS, THREADS = 1, 2
# Four slow clients per thread, as in the attack reported (32 against 2 x 4 threads).
SLOW_DIRECT = WORKERS * THREADS * 4
SLOW_THROUGH_PROXY = 32
DRIP_SECONDS = 1.0  # a byte per slow client this often: well inside client_body_timeout
SLOW_BODY_BYTES = 100_000  # below MAX_BODY_BYTES: the service waits for all of it
PROMPT = 3.0  # seconds: what an answer "in time" means here, on a loaded 2-core machine
ELSEWHERE = "127.0.0.2"  # another client address on the loopback: not the slow clients'


def _load_local() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nginx_local", CONF.with_name("local.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


local = _load_local()


def nginx_or_skip() -> str:
    """nginx's path; without it the test skips, or fails where CI_REQUIRE_NGINX=1."""
    nginx: str | None = local.find_nginx()
    if nginx is None:
        reason = "nginx is not installed: apt-get install nginx"
        if os.environ.get("CI_REQUIRE_NGINX") == "1":
            pytest.fail(f"{reason} (CI_REQUIRE_NGINX=1: this run must not skip the proxy tests)")
        pytest.skip(reason)
    return nginx


def shipped_setting(name: str) -> str:
    """A directive's value in the shipped file (its first occurrence)."""
    found = re.search(rf"^\s*{name} ([^;]+);", CONF.read_text(), re.MULTILINE)
    assert found, f"no {name} in {CONF}"
    return found.group(1)


@dataclass
class Proxy:
    port: int
    prefix: Path
    log: Path  # nginx's stderr: its error log

    def access_log(self) -> str:
        return (self.prefix / "logs" / "access.log").read_text()

    def logged(self, text: str, seconds: float = 5) -> bool:
        """Whether ``text`` shows in the access log within ``seconds``: nginx writes a line
        after the response has gone, so a fast client can read the log before it is there."""
        deadline = time.monotonic() + seconds
        while text not in self.access_log():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


@contextmanager
def proxying(upstream_port: int | list[int], tmp_path: Path) -> Iterator[Proxy]:
    """nginx in the foreground in front of 127.0.0.1:upstream_port (or each of several,
    balanced), as `make proxy` runs it."""
    nginx_or_skip()
    port, prefix, log = free_port(), tmp_path / "nginx", tmp_path / "nginx.log"
    command = [sys.executable, str(CONF.with_name("local.py")), "--port", str(port)]
    upstreams = upstream_port if isinstance(upstream_port, list) else [upstream_port]
    for upstream in upstreams:
        command += ["--upstream-port", str(upstream)]
    command += ["--prefix", str(prefix)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, f"nginx exited:\n{log.read_text()}"
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, f"nginx not up after 10 s:\n{log.read_text()}"
            time.sleep(0.05)
        yield Proxy(port, prefix, log)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # nginx's fast shutdown
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    source: str = "127.0.0.1",
    timeout: float = PROMPT,
) -> tuple[int, http.client.HTTPResponse, bytes]:
    """One request on a connection of its own from ``source``; TimeoutError when no answer
    comes within ``timeout`` seconds."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0)
    )
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response, response.read()
    finally:
        connection.close()


def predict(port: int, *, source: str = "127.0.0.1", timeout: float = PROMPT) -> int:
    body = json.dumps(SAMPLE_RECORD).encode()
    headers = {"Content-Type": "application/json"}
    status, _, answer = call(port, "POST", PREDICT, body, headers, source=source, timeout=timeout)
    assert status != 200 or json.loads(answer)["algorithm"]["name"] == "forest", answer
    return status


@contextmanager
def slowloris(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` clients, each sending a prediction's headers and then its body a byte every
    DRIP_SECONDS, until the block ends."""
    head = (
        f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {SLOW_BODY_BYTES}\r\n\r\n{{"
    ).encode()
    sockets: list[socket.socket] = []
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(DRIP_SECONDS):
            for client in list(sockets):
                with suppress(OSError):  # one the server answered and closed
                    client.send(b" ")

    dripping = threading.Thread(target=drip, daemon=True)
    try:
        for _ in range(count):
            client = socket.create_connection(("127.0.0.1", port), timeout=PROMPT)
            sockets.append(client)
            client.sendall(head)
        dripping.start()
        yield sockets
    finally:
        stop.set()
        if dripping.is_alive():
            dripping.join()
        for client in sockets:
            client.close()


def answered(sockets: list[socket.socket], *, expected: int, seconds: float) -> list[bytes]:
    """The answers that came on ``sockets`` within ``seconds``; stops waiting as soon as
    ``expected`` came. Answered sockets are taken out of the list."""
    answers: list[bytes] = []
    deadline = time.monotonic() + seconds
    while len(answers) < expected and (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select(sockets, [], [], left)
        for client in readable:
            sockets.remove(client)
            response = http.client.HTTPResponse(client)
            try:
                response.begin()
                answers.append(f"{response.status} ".encode() + response.read())
            except (http.client.HTTPException, OSError) as error:  # closed without a word
                answers.append(f"no answer: {error!r}".encode())
            client.close()
    return answers


def adult_csv_upload(rows: int) -> tuple[bytes, str]:
    """A multipart body with a CSV file of ``rows`` Adult records, and its content type."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(SAMPLE_RECORD), lineterminator="\n")
    writer.writeheader()
    writer.writerows({**SAMPLE_RECORD, "age": 20 + n % 50} for n in range(rows))
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="rows.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\n{text.getvalue()}\r\n--{boundary}--\r\n"
    ).encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.django_db(transaction=True)
def test_slow_clients_starve_gunicorn_alone_but_not_behind_the_shipped_proxy(
    registry: MLRegistry, artifacts_dir: Path, tmp_path: Path
) -> None:
    nginx_or_skip()  # before gunicorn starts: a skip should cost nothing
    algorithm(registry, name="forest")
    # The test database is migrated already; migrating again would only cost start-up time.
    env = {"WEB_CONCURRENCY": str(WORKERS), "GUNICORN_THREADS": str(THREADS), "SKIP_MIGRATE": "1"}
    with serving(artifacts_dir, tmp_path, **env) as server:
        direct = int(server.base.rsplit(":", 1)[1])
        with proxying(direct, tmp_path) as proxy:
            # The model loads on a worker's first prediction: not a delay to blame on anyone.
            assert predict(proxy.port, timeout=30) == 200
            _through_the_proxy(proxy, direct)
        _straight_at_gunicorn(direct)


def _through_the_proxy(proxy: Proxy, direct: int) -> None:
    """The slow clients wait in nginx; gunicorn sees none of them."""
    limit = int(shipped_setting("limit_conn").split()[-1])
    # nginx lets in more of them than it takes to hold every gunicorn thread.
    assert SLOW_THROUGH_PROXY > limit >= SLOW_DIRECT
    with slowloris(proxy.port, SLOW_THROUGH_PROXY) as held:
        # One address may have `limit` requests in progress: the others are refused at once.
        refused = answered(held, expected=SLOW_THROUGH_PROXY - limit, seconds=PROMPT)
        assert len(refused) == SLOW_THROUGH_PROXY - limit
        assert all(r.startswith(b"429 ") and b'"code": "throttled"' in r for r in refused)
        assert len(held) == limit
        started = time.monotonic()
        while time.monotonic() - started < 2.5 * DRIP_SECONDS:  # through a few drips
            assert call(proxy.port, "GET", "/healthz", source=ELSEWHERE)[0] == 200
            assert predict(proxy.port, source=ELSEWHERE) == 200
            assert predict(direct) == 200  # gunicorn's threads are free
        # Request ids: the client's is passed on; without one, nginx's, as in its access log.
        status, answer, _ = call(
            proxy.port, "GET", "/healthz", headers={"X-Request-ID": "t-42"}, source=ELSEWHERE
        )
        assert (status, answer.headers["X-Request-ID"]) == (200, "t-42")
        status, answer, _ = call(proxy.port, "GET", "/healthz", source=ELSEWHERE)
        assert status == 200
        assert proxy.logged(f"[{answer.headers['X-Request-ID']}]"), proxy.access_log()
        # An upload larger than nginx keeps in memory goes to a temporary file, and the CSV
        # the service streams back is buffered too.
        body, content_type = adult_csv_upload(300)
        in_memory = shipped_setting("client_body_buffer_size")
        assert in_memory.endswith("k") and len(body) > int(in_memory[:-1]) * 1024
        headers = {"Content-Type": content_type, "Accept": "text/csv"}
        status, _, scored = call(
            proxy.port, "POST", "/api/v1/batch-predict", body, headers, source=ELSEWHERE, timeout=30
        )
        assert status == 200, scored
        rows = list(csv.DictReader(io.StringIO(scored.decode())))
        assert len(rows) == 300 and {r["label"] for r in rows} <= {"<=50K", ">50K"}
        assert "a client request body is buffered to a temporary file" in proxy.log.read_text()
        # The attack went on all along: nginx still holds every slow client it let in.
        assert answered(held, expected=1, seconds=0.1) == []
        assert len(held) == limit


def _straight_at_gunicorn(direct: int) -> None:
    """The control: the same attack at gunicorn itself answers nobody else while it lasts."""
    with slowloris(direct, SLOW_DIRECT) as held, ThreadPoolExecutor(2) as clients:
        waiting: list[Future[object]] = [
            clients.submit(predict, direct),
            clients.submit(call, direct, "GET", "/healthz"),  # Django's too: needs a thread
        ]
        for client in waiting:
            with pytest.raises(TimeoutError):
                client.result()
        assert answered(held, expected=1, seconds=0.1) == []
    # The threads come free when those clients go: the attack was the cause.
    deadline = time.monotonic() + 15
    while True:
        with suppress(TimeoutError):
            if predict(direct) == 200:
                break
        assert time.monotonic() < deadline, "gunicorn did not recover from the attack"


def test_the_proxy_admits_the_largest_uploads_the_service_takes(tmp_path: Path) -> None:
    """nginx refuses a body larger than client_max_body_size from its Content-Length alone,
    and with `Expect: 100-continue` says at once whether it takes one. Its limits are the
    service's own (plus the 64 KiB the service allows for the other form fields), to the
    MiB: batch uploads and bulk feedback at BATCH_MAX_UPLOAD_BYTES, model uploads (API and
    admin) at MODEL_MAX_UPLOAD_BYTES. No gunicorn needed: nothing is sent on."""
    margin, mib = 64 * 1024, 1024 * 1024
    uploads = {
        "/api/v1/batch-predict": settings.BATCH_MAX_UPLOAD_BYTES,
        "/api/v1/feedback": settings.BATCH_MAX_UPLOAD_BYTES,
        "/api/v1/mlalgorithms": settings.MODEL_MAX_UPLOAD_BYTES,
        "/admin/endpoints/mlalgorithm/add/": settings.MODEL_MAX_UPLOAD_BYTES,
    }
    with proxying(free_port(), tmp_path) as proxy:
        for path, limit in uploads.items():
            assert _first_answer(proxy.port, path, limit + margin).startswith(
                b"HTTP/1.1 100 Continue"
            ), path
            refused = _first_answer(proxy.port, path, limit + margin + mib)
            assert refused.startswith(b"HTTP/1.1 413 "), (path, refused)
            assert b'"code": "too_large"' in refused and b"X-Request-ID: " in refused


def _first_answer(port: int, path: str, length: int) -> bytes:
    """nginx's first answer to a POST of ``length`` bytes that waits for 100 Continue: that
    interim answer alone, or a final one whole."""
    with socket.create_connection(("127.0.0.1", port), timeout=PROMPT) as client:
        client.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/csv\r\n"
            f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer and (piece := client.recv(4096)):
            answer += piece
        head, _, body = answer.partition(b"\r\n\r\n")
        if sized := re.search(rb"Content-Length: (\d+)", head, re.IGNORECASE):
            while len(body) < int(sized.group(1)) and (piece := client.recv(4096)):
                body += piece
        return head + b"\r\n\r\n" + body


def test_without_nginx_the_proxy_tests_skip_with_the_fix_or_fail_in_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(local, "find_nginx", lambda: None)
    monkeypatch.delenv("CI_REQUIRE_NGINX", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install nginx"):
        nginx_or_skip()
    monkeypatch.setenv("CI_REQUIRE_NGINX", "1")
    with pytest.raises(pytest.fail.Exception, match="nginx is not installed"):
        nginx_or_skip()


def test_the_local_proxy_is_the_shipped_file_but_for_ports_and_log(tmp_path: Path) -> None:
    local.render(tmp_path, port=18080, upstream_ports=[18000])
    shipped = CONF.read_text().splitlines()
    rendered = (tmp_path / "ml_pipeline.conf").read_text().splitlines()
    changed = [(a, b) for a, b in zip(shipped, rendered, strict=True) if a != b]
    assert [b.strip() for _, b in changed] == [
        "server 127.0.0.1:18000 max_fails=1 fail_timeout=10s;",
        "listen 127.0.0.1:18080;",
        "access_log logs/access.log ml_pipeline;",
    ]
    # Several app hosts: a server line each, with the shipped line's health parameters.
    local.render(tmp_path, port=18080, upstream_ports=[18000, 18001])
    rendered = (tmp_path / "ml_pipeline.conf").read_text().splitlines()
    assert len(rendered) == len(shipped) + 1
    servers = [line.strip() for line in rendered if line.startswith("    server 127")]
    assert servers == [
        f"server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;" for p in (18000, 18001)
    ]
