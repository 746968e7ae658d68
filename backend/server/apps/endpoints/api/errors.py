"""One error shape for the whole API, documented in docs/api.md ("Errors")::

    {"error": {"code": "<stable machine code>", "message": "<what to fix>", "details": ...}}

``details`` is present when there is more to say, e.g. per-field messages. Messages quote
what the client sent (a wrong category, an unknown field) so it can be found; every string
in an error, keys included, is clipped past 1,000 characters, and ``details`` lists at
most 50 problems at each level (``details_omitted`` counts the rest), so an error never
echoes a long input back whole: 25k unknown keys answer 50 of them, not 5 MB.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apps.core.errors import PayloadTooLarge, ServiceError

logger = logging.getLogger(__name__)


# Characters. Our longest message lists the 41 native countries (about 600); a longer
# string can only be client input, kept to its first 200 characters.
MAX_ERROR_STRING = 1000
# Entries of a dict or list in ``details``: enough to act on, and a client that sent
# thousands of bad fields learns how many from ``details_omitted``.
MAX_ERROR_ITEMS = 50


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": _clip(message, [])}
    if details is not None:
        omitted: list[int] = []
        error["details"] = _clip(details, omitted)
        if omitted:
            error["details_omitted"] = sum(omitted)
    return {"error": error}


def _clip(value: Any, omitted: list[int]) -> Any:
    if isinstance(value, str):
        if len(value) <= MAX_ERROR_STRING:
            return value
        return f"{value[:200]}...({len(value)} characters)"
    if isinstance(value, dict):
        if len(value) > MAX_ERROR_ITEMS:
            omitted.append(len(value) - MAX_ERROR_ITEMS)
        items = list(value.items())[:MAX_ERROR_ITEMS]
        return {_clip(str(k), omitted): _clip(v, omitted) for k, v in items}
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_ERROR_ITEMS:
            omitted.append(len(value) - MAX_ERROR_ITEMS)
        return [_clip(v, omitted) for v in value[:MAX_ERROR_ITEMS]]
    return value


def handle(exc: Exception, context: dict[str, Any]) -> Response:
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = PayloadTooLarge(f"The body is larger than {limit} bytes (MAX_BODY_BYTES).")
    elif isinstance(exc, SuspiciousOperation):  # e.g. too many fields; Django's own 400s
        exc = exceptions.ParseError(f"The request was refused: {exc}")
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status_code)
    if isinstance(exc, RecursionError):
        # Python's json parser recurses per nesting level; DRF does not turn this into a 400.
        exc = exceptions.ParseError("JSON parse error - the body is nested too deeply.")
    if isinstance(exc, DatabaseError):
        logger.error("Database error: %s", exc)
        return Response(
            error_body("database_unavailable", "The database is unavailable; try again."),
            status=503,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled error", exc_info=exc)
        return Response(error_body("server_error", ServiceError.default_message), status=500)
    assert isinstance(exc, exceptions.APIException)  # anything else got response None
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body("invalid_input", _first_message(response.data), response.data)
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else ""
        code = exc.detail.code if hasattr(exc.detail, "code") else exc.default_code
        response.data = error_body(str(code), str(detail or exc.default_detail))
    return response


def _first_message(details: Any, prefix: str = "") -> str:
    """The first validation message, prefixed by its field: something a client can act on."""
    if isinstance(details, dict) and details:
        field, value = next(iter(details.items()))
        where = "" if field in ("non_field_errors", "detail") else f"{prefix}{field}: "
        return _first_message(value, where)
    if isinstance(details, list) and details:
        return _first_message(details[0], prefix)
    return f"{prefix}{details}" if details else "The input is not valid."
