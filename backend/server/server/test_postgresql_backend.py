"""server.postgresql: the per-request health check asks the socket, and pings the server
only when the server spoke unasked."""

from __future__ import annotations

import select
import time
from typing import Any

import pytest
from django.db import close_old_connections, connection
from django.test import Client

from apps.endpoints.tests.factories import algorithm
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = [
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="the PostgreSQL backend needs PostgreSQL (CI's second run sets DATABASE_URL)",
    ),
    pytest.mark.django_db(transaction=True),  # autocommit, as a served request
]


class Pings:
    """Records every statement run on the raw psycopg connection: Django's queries and the
    stock health check's SELECT 1, which runs on a raw cursor past Django's query log."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.sent: list[str] = []

    def __enter__(self) -> Pings:
        make_cursor, sent = self.raw.cursor, self.sent

        def cursor(*args: Any, **kwargs: Any) -> Any:
            made = make_cursor(*args, **kwargs)
            execute = made.execute

            def recording(query: Any, *a: Any, **k: Any) -> Any:
                sent.append(str(query))
                return execute(query, *a, **k)

            made.execute = recording
            return made

        self.raw.cursor = cursor
        return self

    def __exit__(self, *exc: object) -> None:
        del self.raw.cursor

    @property
    def pings(self) -> list[str]:
        return [query for query in self.sent if query.strip().upper() == "SELECT 1"]


def test_a_quiet_connection_is_usable_without_a_round_trip() -> None:
    connection.ensure_connection()
    with Pings(connection.connection) as pings:
        assert connection.is_usable()
    assert pings.sent == []

    with Pings(connection.connection) as pings:  # the recorder sees the stock check
        connection.connection.cursor().execute("SELECT 1")
    assert pings.pings == ["SELECT 1"]


def test_a_connection_the_server_closed_is_found_and_replaced() -> None:
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    killer = connection.copy("killer")
    try:
        with killer.cursor() as other:
            other.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        killer.close()
    deadline = time.monotonic() + 5
    while not select.select([connection.connection.fileno()], [], [], 0.05)[0]:
        assert time.monotonic() < deadline, "the server did not close the connection"
    assert not connection.is_usable()

    close_old_connections()  # what the next request does first (request_started)
    connection.close_if_health_check_failed()  # and then before its first query
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid


def test_a_warm_predict_sends_no_health_check_ping(registry: MLRegistry, settings: Any) -> None:
    assert settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] is True
    algorithm(registry)
    client = Client()
    path = "/api/v1/income_classifier/predict"
    assert client.post(path, SAMPLE_RECORD, content_type="application/json").status_code == 200
    with Pings(connection.connection) as pings:
        for _ in range(3):
            # The test client leaves out what a served request starts with (request_started
            # -> close_old_connections), and so the health check: done here as gunicorn does.
            close_old_connections()
            answer = client.post(path, SAMPLE_RECORD, content_type="application/json")
            assert answer.status_code == 200
    assert pings.pings == []
    assert len([q for q in pings.sent if q.lstrip().upper().startswith("INSERT")]) == 3
