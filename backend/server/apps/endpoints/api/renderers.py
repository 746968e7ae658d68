"""Renderers of our own: the browsable API's form that starts from an example record, and
CSV as a format clients may ask for."""

from __future__ import annotations

import json
from typing import Any

from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class ExampleFormRenderer(BrowsableAPIRenderer):
    """The browsable API, whose POST form starts from the view's ``form_example()`` (for
    predict: a record of the model card) instead of an empty box."""

    def get_raw_data_form(self, data: Any, view: APIView, method: str, request: Request) -> Any:
        form = super().get_raw_data_form(data, view, method, request)
        example = getattr(view, "form_example", None)
        if form is not None and method == "POST" and example is not None:
            record = example()
            if record is not None:
                form.fields["_content"].initial = json.dumps(record, indent=4)
        return form


class CSVRenderer(BaseRenderer):
    """Lets clients ask for CSV (``Accept: text/csv`` or ``?format=csv``). The CSV answer
    itself is streamed by the view; errors are always answered as JSON
    (``JsonErrorsMixin``)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return JSONRenderer().render(data)


class JsonErrorsMixin:
    """For views that answer CSV: an error is answered in the one JSON error shape, with
    JSON's content type, whether the client accepted CSV or nothing this view makes (a 406,
    which DRF would otherwise render with the view's first renderer)."""

    def handle_exception(self, exc: Exception) -> Response:
        response: Response = super().handle_exception(exc)  # type: ignore[misc]
        request = self.request  # type: ignore[attr-defined]  # an APIView's
        accepted = getattr(request, "accepted_renderer", None)
        if accepted is None or isinstance(accepted, CSVRenderer):
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return response
