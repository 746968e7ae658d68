"""Django-level errors (URLs that match no view, crashes outside DRF) in the API's one error
shape (``api/errors.py``): ``server/urls.py`` names these as its handlers."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from apps.core.errors import BadRequest, Forbidden, NotFound, ServiceError
from apps.endpoints.api.errors import error_body


def _json_error(error: ServiceError, request: HttpRequest | None = None) -> JsonResponse:
    if request is not None and request.path_info.startswith("/v2/"):
        # The Open Inference Protocol's routes answer in its shape (views/oip.py), those
        # that match no view too (a model name the route's pattern does not take).
        return JsonResponse({"error": error.message}, status=error.status_code)
    return JsonResponse(error_body(error.code, error.message), status=error.status_code)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _json_error(NotFound(f"No route matches {request.path}."), request)


def server_error(request: HttpRequest) -> JsonResponse:
    return _json_error(ServiceError(), request)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    # Django's own 400s (a Host header not in ALLOWED_HOSTS, a suspicious request): in the
    # same shape as every other error, not an HTML page.
    return _json_error(BadRequest("The request was refused (check the Host header and body)."))


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _json_error(Forbidden())
