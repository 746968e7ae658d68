"""The request log over HTTP: reading it (``GET /api/v1/mlrequests``), and giving
feedback, one request at a time (``PUT``) or as a file (``POST /api/v1/feedback``)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.exceptions import NotFound as DRFNotFound
from rest_framework.generics import GenericAPIView
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from apps.core.errors import NotFound
from apps.endpoints import policy
from apps.endpoints.api import openapi
from apps.endpoints.api.inputs import upload_form
from apps.endpoints.models import MLRequest
from apps.endpoints.serializers import (
    BulkFeedbackResultSerializer,
    BulkFeedbackSerializer,
    FeedbackResultSerializer,
    FeedbackSerializer,
    MLRequestSerializer,
)
from apps.endpoints.serving import feedback
from apps.endpoints.serving.selectors import filter_requests, visible_requests


class RequestLogPages(CursorPagination):
    """The log, newest first, a page at a time by a cursor: no ``COUNT(*)`` and no
    ``OFFSET``, so page 500 costs what page 1 does, and rows logged meanwhile neither
    shift a page nor repeat one."""

    ordering = "-id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

    def decode_cursor(self, request: Request) -> Cursor | None:
        """DRF's, refusing a position that is not an id: a cursor is ours, base64 of
        ``p=<id>``, and anything else in it would reach the query (a 500 for ``p=abc``)."""
        cursor = super().decode_cursor(request)
        position = None if cursor is None or cursor.position is None else str(cursor.position)
        if position is not None and not (position.isascii() and position.isdigit()):
            raise DRFNotFound(self.invalid_cursor_message)
        return cursor


class MLRequestViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet[MLRequest],
):
    """The prediction log. Staff allowed to view requests read all of it, other users their
    own requests, anonymous clients nothing (``selectors.visible_requests``).

    ``PUT``/``PATCH`` give a request's feedback, with the ``feedback_token`` its prediction
    answered (``feedback.py``); the answer shows the feedback, not the request."""

    throttle_scope = "predict"  # feedback arrives at the rate of predictions
    serializer_class = MLRequestSerializer
    # feedback without the request's token; a filter of the list that cannot be one
    openapi_error_codes = (400, 403)

    pagination_class = RequestLogPages

    def get_queryset(self) -> QuerySet[MLRequest]:
        requests = visible_requests(user=self.request.user)
        if self.action == "list":
            return filter_requests(requests, self.request.query_params)
        return requests

    def get_permissions(self) -> list[BasePermission]:
        if self.action in ("update", "partial_update"):
            return [policy.FeedbackAccess()]
        return [IsAuthenticated()]

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        if self.action in ("update", "partial_update"):
            return FeedbackSerializer
        return MLRequestSerializer

    @openapi.request_log_schema
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(request=FeedbackSerializer, responses={200: FeedbackResultSerializer})
    def update(self, request: Request, pk: str) -> Response:
        body = FeedbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        row = feedback.give(
            request_id=_request_id(pk),
            value=body.validated_data.get("feedback"),
            token=body.validated_data.get("feedback_token"),
            actor=policy.Actor.of(request),
        )
        return Response(FeedbackResultSerializer(row).data)

    @extend_schema(request=FeedbackSerializer, responses={200: FeedbackResultSerializer})
    def partial_update(self, request: Request, pk: str) -> Response:
        return self.update(request, pk)


def _request_id(pk: str) -> int:
    if not (pk.isascii() and pk.isdigit() and len(pk) <= 18):
        raise NotFound(f"No logged request {pk[:40]}.")
    return int(pk)


class BulkFeedbackView(GenericAPIView):  # type: ignore[type-arg]
    """``POST /api/v1/feedback``: a CSV file (multipart field ``file``) of
    ``request_id,feedback_token,feedback`` rows, applied in one transaction. Answers how many
    were applied and, per refused row, its line and why; with ``atomic`` (form field or
    query parameter) one refused row refuses the file."""

    permission_classes = [policy.FeedbackAccess]
    throttle_scope = "predict"
    parser_classes = [MultiPartParser, FormParser]
    serializer_class = BulkFeedbackSerializer

    @openapi.bulk_feedback_schema
    @extend_schema(responses={200: BulkFeedbackResultSerializer})
    def post(self, request: Request) -> Response:
        data = upload_form(self, request)
        result = feedback.give_many(
            upload=data["file"], actor=policy.Actor.of(request), atomic=data["atomic"]
        )
        return Response(BulkFeedbackResultSerializer(result).data)
