"""The probe and scrape views. Plain Django, no DRF: no authentication, sessions or content
negotiation on paths a load balancer and Prometheus call every few seconds. /metrics checks
its own bearer token when ``METRICS_TOKEN`` is set (``metrics.scrape_allowed``); /readyz
shows what its checks found only to the same token (``metrics.checks_allowed``)."""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from apps.endpoints.api.errors import error_body
from apps.ml.registry import get_registry
from apps.ops import health, metrics


def healthz(request: HttpRequest) -> JsonResponse:
    """Alive: the process answers. Touches nothing else, the database least of all."""
    return JsonResponse({"status": "ok", "pid": os.getpid()})


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready (200) or not (503), to anyone: a load balancer needs the status code. Why, the
    versions and this worker's pid: only to an operator's token (or with DEBUG on)."""
    result = health.readiness(get_registry())
    health.log_change(result)
    if not metrics.checks_allowed(request.headers.get("Authorization", "")):
        if result.ready:
            return JsonResponse({"status": "ready"})
        return JsonResponse(error_body("not_ready", "Not ready."), status=503)
    if result.ready:
        return JsonResponse({"status": "ready", "pid": os.getpid(), **result.checks})
    message = "Not ready: " + "; ".join(result.problems)
    return JsonResponse(error_body("not_ready", message, result.checks), status=503)


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics.scrape_allowed(request.headers.get("Authorization", "")):
        message = "/metrics needs the header 'Authorization: Bearer <METRICS_TOKEN>'."
        return JsonResponse(
            error_body("not_authenticated", message),
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return HttpResponse(
        generate_latest(metrics.scrape_registry()), content_type=CONTENT_TYPE_LATEST
    )


# The Open Inference Protocol's health routes (docs/protocols.md): its clients (tritonclient's
# is_server_live/is_server_ready, KServe's and Seldon's probes) ask these. The same checks
# as /healthz and /readyz; the protocol says 200 for true and a 4xx for false.


def v2_live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"live": True})


def v2_ready(request: HttpRequest) -> JsonResponse:
    result = health.readiness(get_registry())
    health.log_change(result)
    return JsonResponse({"ready": result.ready}, status=200 if result.ready else 400)
