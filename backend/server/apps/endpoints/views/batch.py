"""``POST /api/v1/batch-predict``: a CSV file scored while the client waits
(``batch/score.py``), answered as JSON or CSV (``batch/output.py``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpResponseBase, StreamingHttpResponse
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from apps.endpoints import policy
from apps.endpoints.api import openapi
from apps.endpoints.api.inputs import upload_form
from apps.endpoints.api.renderers import CSVRenderer, JsonErrorsMixin
from apps.endpoints.batch import output
from apps.endpoints.batch.score import score_upload
from apps.endpoints.serializers import BatchPredictSerializer


class BatchPredictView(JsonErrorsMixin, GenericAPIView[Any]):
    """``POST /api/v1/batch-predict``: a CSV file (multipart field ``file``) scored row by
    row in one pass; ``endpoint`` (optional with one endpoint), ``status``, ``version`` as
    form fields or query parameters. Answers JSON, or with ``Accept: text/csv`` the uploaded
    rows plus ``request_id``, ``label`` and ``probability``; ``log_requests=false`` answers
    without logging the rows (no ``request_id`` or ``feedback_token``). Unlike predict, it reads the
    credentials sent whatever ``PREDICT_ACCESS``: whose rows and feedback they are depends
    on them."""

    permission_classes = [policy.PredictAccess]
    throttle_scope = "predict"
    parser_classes = [MultiPartParser, FormParser]
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer, CSVRenderer]
    serializer_class = BatchPredictSerializer

    @openapi.batch_schema
    def post(self, request: Request) -> HttpResponseBase:
        data = upload_form(self, request)
        upload = data["file"]
        actor = policy.Actor.of(request)
        answer_format = request.accepted_renderer.format
        result = score_upload(
            upload=upload,
            endpoint_name=data.get("endpoint"),
            status=data.get("status", settings.PREDICT_DEFAULT_STATUS),
            version=data.get("version"),
            actor=actor,
            log_requests=data["log_requests"],
            answer_json=answer_format == "json",
        )
        if answer_format == "csv":
            return StreamingHttpResponse(
                output.csv_stream(result, upload), content_type="text/csv; charset=utf-8"
            )
        if answer_format == "api":  # a person in the browsable API
            return Response({**output.summary(result), "predictions": output.predictions(result)})
        return StreamingHttpResponse(output.json_stream(result), content_type="application/json")
