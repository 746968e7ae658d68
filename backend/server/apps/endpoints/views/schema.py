"""The OpenAPI document (``/api/v1/schema``) and Swagger UI (``/api/v1/docs``), by
drf-spectacular; the document's errors in the API's one JSON shape."""

from __future__ import annotations

from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.endpoints.api.renderers import JsonErrorsMixin


class SchemaView(JsonErrorsMixin, SpectacularAPIView):
    """The document, as YAML (``application/vnd.oai.openapi``) or JSON."""


__all__ = ["SchemaView", "SpectacularSwaggerView"]
