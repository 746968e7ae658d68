"""What every view does with a request before its service runs: an upload form checked
against its size limit, short strings checked by hand on the predict path, and the
headers that carry what must stay out of URLs (assignment keys, job tokens)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import QueryDict
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request

from apps.core.errors import InvalidInput, PayloadTooLarge


def upload_form(
    view: GenericAPIView[Any],
    request: Request,
    *,
    field: str = "file",
    setting: str = "BATCH_MAX_UPLOAD_BYTES",
) -> dict[str, Any]:
    """The view's form, validated, its file ``field`` at most ``setting`` bytes (or, for a
    client that is not signed in, ``ANONYMOUS_<setting>`` where that is set and smaller):
    refused before the body is read when the client says how big it is (64 KiB left for
    the other fields), and by the file's own size after."""
    setting = limit_for(request, setting)
    limit = getattr(settings, setting)
    if int(request.META.get("CONTENT_LENGTH") or 0) > limit + 64 * 1024:
        raise _too_large(setting)
    form = view.get_serializer(data=_form_fields(request))
    form.is_valid(raise_exception=True)
    data: dict[str, Any] = form.validated_data
    if data[field].size > limit:
        raise _too_large(setting)
    return data


def limit_for(request: Request, setting: str) -> str:
    """``setting``, or its anonymous clients' counterpart where that applies."""
    anonymous = f"ANONYMOUS_{setting}"
    smaller = getattr(settings, anonymous, 0)
    if smaller and smaller < getattr(settings, setting) and not request.user.is_authenticated:
        return anonymous
    return setting


def _form_fields(request: Request) -> dict[str, Any]:
    """The form fields, with the query parameters as defaults. Without a body, DRF's
    request.data is a plain {} rather than a QueryDict."""
    fields = request.data.dict() if isinstance(request.data, QueryDict) else {}
    return {**request.query_params.dict(), **fields}


def _too_large(setting: str) -> PayloadTooLarge:
    why = setting
    if setting.startswith("ANONYMOUS_"):
        why += ", for clients that do not sign in: send a token for more"
    return PayloadTooLarge(f"The file is larger than {getattr(settings, setting)} bytes ({why}).")


def assignment_key(request: Request) -> str | None:
    """The client's ``X-Assignment-Key`` header (sticky A/B arms), or None."""
    return short("X-Assignment-Key", request.headers.get("X-Assignment-Key"), 256)


def job_token(request: Request) -> str | None:
    """An anonymous submitter's ``X-Job-Token`` header, or None. A ``?token=`` is refused
    (400), on every batch-job route: a URL is written to access logs (gunicorn's, nginx's,
    a proxy's) and a browser's history, where a token gives the job and its rows to whoever
    reads them. Ignoring it instead would answer a 404 that does not say why."""
    if "token" in request.query_params:
        raise InvalidInput(
            "Send the job's token in the X-Job-Token header, not in the URL: URLs are "
            "written to access logs.",
            details={"token": ["Not taken from the URL; send the X-Job-Token header."]},
        )
    return request.headers.get("X-Job-Token")


def short(name: str, value: str | None, limit: int) -> str | None:
    # Checked by hand, not by a serializer: on the predict path a serializer costs more
    # than the compiled model.
    if value and len(value) > limit:
        raise InvalidInput(
            f"{name} is too long ({limit} characters at most).",
            details={name: [f"Ensure this field has no more than {limit} characters."]},
        )
    return value or None
