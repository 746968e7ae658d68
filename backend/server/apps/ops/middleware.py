"""Middleware for operations: the probe paths, and request metrics for every view."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from apps.core import telemetry
from apps.endpoints.api.errors import error_body
from apps.ops import views

GetResponse = Callable[[HttpRequest], HttpResponse]

PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": views.healthz,
    "/readyz": views.readyz,
    "/metrics": views.metrics_view,
    "/v2/health/live": views.v2_live,
    "/v2/health/ready": views.v2_ready,
}


class ProbeMiddleware:
    """Answers /healthz, /readyz and /metrics (and the Open Inference Protocol's
    /v2/health/live and /v2/health/ready) before Django validates the Host header: load
    balancers and Prometheus address a server by its IP, which is rarely in ALLOWED_HOSTS.
    Being first, these paths also skip sessions, CSRF and the request metrics; /metrics
    checks its own token (METRICS_TOKEN) in its view."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = PROBES.get(request.path_info)
        if view is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return JsonResponse(
                error_body("method_not_allowed", f'Method "{request.method}" not allowed.'),
                status=405,
                headers={"Allow": "GET, HEAD"},
            )
        return view(request)


class MetricsMiddleware:
    """Latency of every request and the code of every error, labelled by the view that
    answered (its URL name), so a view added later, such as batch prediction, is measured
    without further wiring."""

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        # Unmatched paths share one label: a scanner must not create a series per URL.
        view = match.view_name if match is not None else "unmatched"
        telemetry.REQUEST_LATENCY.labels(view=view, method=request.method).observe(
            time.perf_counter() - started
        )
        if response.status_code >= 400:
            telemetry.ERRORS.labels(view=view, code=_error_code(response)).inc()
        return response


def _error_code(response: HttpResponse) -> str:
    """The ``error.code`` of our one error shape; ``http_<status>`` for anything else (an
    HTML page from CSRF, say)."""
    body = getattr(response, "data", None)  # a DRF Response, before rendering is read
    is_json = response.get("Content-Type", "").startswith("application/json")
    if body is None and is_json and not response.streaming:
        try:
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        if isinstance(code, str):
            return code
    return f"http_{response.status_code}"
