"""Larger bodies for the wire protocols' prediction routes.

Django bounds every body it reads in memory by ``DATA_UPLOAD_MAX_MEMORY_SIZE``
(``MAX_BODY_BYTES``, 256 KB: a predict record is under 1 KB). A request of the Open
Inference Protocol or of MLflow's scoring format carries a batch as JSON tensors or a
dataframe (10,000 Adult rows are 1.4 MB), so those routes read their body here first, up
to ``PROTOCOL_MAX_BODY_BYTES``, and Django then finds it read: one more bound, for the
routes that need it, instead of raising the bound of every route.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from apps.core.errors import PayloadTooLarge
from apps.endpoints.api.errors import error_body

# POST /v2/models/<model>[/versions/<version>]/infer, /invocations, /api/v1/<e>/invocations
PROTOCOL_ROUTES = re.compile(
    r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$|^(/api/v1/[^/]+)?/invocations$"
)


class ProtocolBodyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and PROTOCOL_ROUTES.match(request.path_info):
            limit: int = settings.PROTOCOL_MAX_BODY_BYTES
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
            body = b"" if declared > limit else request.read(limit + 1)
            if declared > limit or len(body) > limit:
                return _too_large(request, limit)
            # As Django keeps a body it has read: request.body and DRF's parsers use it.
            request._body = body
            request._stream = io.BytesIO(body)
        return self.get_response(request)


def _too_large(request: HttpRequest, limit: int) -> JsonResponse:
    message = f"The body is larger than {limit} bytes (PROTOCOL_MAX_BODY_BYTES)."
    if request.path_info.startswith("/v2/"):
        return JsonResponse({"error": message}, status=413)  # the protocol's error shape
    return JsonResponse(error_body(PayloadTooLarge.code, message), status=413)
