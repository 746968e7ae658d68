"""A request id on every request: in the ``X-Request-ID`` response header, on every log line
written while the request is handled, and on one access-log line per request.

An incoming ``X-Request-ID`` (set by a proxy or the client, to follow one request across
services) is kept when it looks like an id; anything else is replaced by a fresh one, so a
client cannot inject text into the logs. Not to be confused with ``request_id`` in a
prediction's body: that is the id of the logged prediction, to send feedback to.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=/-]{0,127}")

# A context variable, not a thread-local: right under threads (gunicorn gthread) and asyncio.
_current: ContextVar[str] = ContextVar("request_id", default="-")

access_log = logging.getLogger("server.access")


def current_request_id() -> str:
    return _current.get()


def _accept(incoming: str | None) -> str:
    if incoming and _SANE.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """First in MIDDLEWARE, so the id covers everything that logs after it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = _accept(request.headers.get(HEADER))
        token = _current.set(request_id)
        started = time.perf_counter()
        try:
            request.request_id = request_id  # type: ignore[attr-defined]
            response = self.get_response(request)
            response[HEADER] = request_id
            access_log.info(
                '"%s %s" %s %.1fms',
                request.method,
                request.get_full_path(),
                response.status_code,
                (time.perf_counter() - started) * 1000,
            )
            return response
        finally:
            _current.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record ("-" outside a request), for the log format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _current.get()
        return True
