"""PostgreSQL goes away under a running server and comes back: predict answers 503 JSON,
/readyz says why (to the operator's token), and the same workers serve again once the
database is back, no restart.

The server reaches PostgreSQL through a TCP relay that the test can cut: closing it drops
every open connection and refuses new ones, which is what the workers see when PostgreSQL
stops (stopping the machine's real PostgreSQL would take the test database with it).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection

from apps.endpoints.tests.factories import algorithm
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD
from apps.ops.tests.live_server import current_database_url, free_port, serving

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="a PostgreSQL outage needs PostgreSQL (CI's second run sets DATABASE_URL)",
)

PREDICT = "/api/v1/income_classifier/predict"


class Relay:
    """Forwards 127.0.0.1:<port> to the database server until ``cut()``; ``restore()``
    listens on the same port again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream, self.port = upstream, free_port()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._silent = False

    def restore(self, *, silent: bool = False) -> None:
        """Listen again: forwarding, or ``silent``ly accepting and never answering (a host
        that drops packets, the case a connect timeout is for)."""
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener, self._silent = listener, silent
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        assert self._listener is not None
        with self._lock:
            if self._listener.fileno() != -1:
                # shutdown() wakes the thread blocked in accept(); close() alone would leave
                # the port listening until that call returns.
                self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            if self._silent:
                with self._lock:
                    self._sockets.add(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:  # the database itself is down: refuse this one, keep listening
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if listener.fileno() == -1:  # cut while this one was being accepted
                    client.close()
                    server.close()
                    return
                self._sockets |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@contextmanager
def relay_until_done(relay: Relay) -> Iterator[None]:
    try:
        yield
    finally:
        relay.cut()  # no listener or pump thread outlives the test


@pytest.mark.django_db(transaction=True)
def test_predict_answers_503_while_postgresql_is_down_and_recovers_without_restart(
    registry: MLRegistry, artifacts_dir: Path, tmp_path: Path
) -> None:
    algorithm(registry, name="forest")
    db = connection.settings_dict
    relay = Relay((db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
    relay.restore()
    through_relay = current_database_url().replace(
        f"@{db['HOST']}:{db['PORT']}/", f"@127.0.0.1:{relay.port}/"
    )
    assert str(relay.port) in through_relay

    # Persistent connections (DB_CONN_MAX_AGE) as in production: the outage breaks
    # connections the workers hold open, the hard case for recovery.
    with (
        relay_until_done(relay),
        serving(
            artifacts_dir,
            tmp_path,
            database_url=through_relay,
            DB_CONN_MAX_AGE="600",
            PREDICT_CACHE_SECONDS="0",
            DB_CONNECT_TIMEOUT="2",
            METRICS_TOKEN="live-operator-token",  # reads why /readyz is not ready
        ) as server,
    ):
        for _ in range(4):  # both workers open their connection
            status, _, body = server.call("POST", PREDICT, SAMPLE_RECORD)
            assert status == 200, body
        assert server.call("GET", "/readyz")[0] == 200

        relay.cut()
        for _ in range(4):
            status, headers, body = server.call("POST", PREDICT, SAMPLE_RECORD)
            assert status == 503, body
            assert headers["Content-Type"] == "application/json"
            assert json.loads(body)["error"]["code"] == "database_unavailable"
        operator = {"Authorization": "Bearer live-operator-token"}
        status, _, body = server.call("GET", "/readyz", headers=operator)
        assert status == 503
        error = json.loads(body)["error"]
        assert error["message"].startswith("Not ready: database unavailable")
        assert error["details"]["database"].startswith("unavailable")
        assert server.call("GET", "/healthz")[0] == 200  # alive: no reason to restart it

        relay.restore()
        answers = [server.call("POST", PREDICT, SAMPLE_RECORD) for _ in range(4)]
        assert [status for status, _, _ in answers] == [200] * 4, answers
        status, _, body = server.call("GET", "/readyz")
        assert status == 200, body

        # A database host that takes the connection and never answers: DB_CONNECT_TIMEOUT,
        # not gunicorn's 60 s timeout, decides when the client hears 503.
        relay.cut()
        relay.restore(silent=True)
        started = time.monotonic()
        status, _, body = server.call("POST", PREDICT, SAMPLE_RECORD)
        assert status == 503, body
        assert time.monotonic() - started < 10
        relay.cut()
        relay.restore()
        assert server.call("POST", PREDICT, SAMPLE_RECORD)[0] == 200

    logged = connection.cursor()
    logged.execute("SELECT count(*) FROM endpoints_mlrequest")
    assert logged.fetchone()[0] == 9  # the refused predictions left no rows, the rest did
