"""HTTP views: parse the request, call one service or selector, serialise the answer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
    HttpResponseBase,
    JsonResponse,
    QueryDict,
    StreamingHttpResponse,
)
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.generics import GenericAPIView
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from apps.core.errors import (
    BadRequest,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ServiceError,
)
from apps.endpoints import (
    ab_testing,
    batch,
    batch_output,
    catalogue,
    feedback,
    openapi,
    selectors,
    serving,
)
from apps.endpoints.exception_handler import error_body
from apps.endpoints.models import ABTest, Endpoint, MLAlgorithm, MLAlgorithmStatus, MLRequest
from apps.endpoints.permissions import FeedbackAccess, PredictAccess, PredictAccessMixin
from apps.endpoints.serializers import (
    ABTestSerializer,
    BatchPredictSerializer,
    BulkFeedbackResultSerializer,
    BulkFeedbackSerializer,
    EndpointSerializer,
    FeedbackResultSerializer,
    FeedbackSerializer,
    MLAlgorithmSerializer,
    MLAlgorithmStatusSerializer,
    MLRequestSerializer,
    RegisteredSerializer,
    RegisterModelSerializer,
    StopABTestSerializer,
)


class EndpointViewSet(viewsets.ReadOnlyModelViewSet[Endpoint]):
    queryset = Endpoint.objects.all()
    serializer_class = EndpointSerializer


class MLAlgorithmViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet[MLAlgorithm]):
    """The algorithms and their model cards. ``POST`` (multipart, staff allowed to add
    algorithms) registers a model file as a new version: ``catalogue.register_model``."""

    queryset = selectors.algorithms_with_current_status()
    serializer_class = MLAlgorithmSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    throttle_scope = "management"
    openapi_error_codes = (409,)  # the endpoint already has this name and version

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        if self.action == "create":
            return RegisterModelSerializer
        return MLAlgorithmSerializer

    def get_throttles(self) -> list[BaseThrottle]:
        # A registration is a management write; reading the catalogue is not limited.
        return super().get_throttles() if self.action == "create" else []

    @extend_schema(
        request={"multipart/form-data": RegisterModelSerializer},
        responses={201: RegisteredSerializer},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = upload_form(self, request, field="artifact", setting="MODEL_MAX_UPLOAD_BYTES")
        registered = catalogue.register_upload(
            upload=data["artifact"],
            file_name=data["artifact"].name,
            example=data.get("input_example"),
            user=request.user.get_username(),
            endpoint_name=data["endpoint"],
            name=data["name"],
            version=data["version"],
            status=data["status"],
            description=data.get("description", ""),
            target_column=data.get("target_column", ""),
        )
        algorithm = selectors.algorithms_with_current_status().get(pk=registered.algorithm.pk)
        algorithm.notes = registered.notes  # type: ignore[attr-defined]
        body = RegisteredSerializer(algorithm, context=self.get_serializer_context()).data
        return Response(body, status=201)


class MLAlgorithmStatusViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet[MLAlgorithmStatus],
):
    """Creating a status makes it the algorithm's active one (staff only)."""

    throttle_scope = "management"
    queryset = MLAlgorithmStatus.objects.all()
    serializer_class = MLAlgorithmStatusSerializer


class RequestLogPages(CursorPagination):
    """The log, newest first, a page at a time by a cursor: no ``COUNT(*)`` and no
    ``OFFSET``, so page 500 costs what page 1 does, and rows logged meanwhile neither
    shift a page nor repeat one."""

    ordering = "-id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


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
        requests = selectors.visible_requests(user=self.request.user)
        if self.action == "list":
            return selectors.filter_requests(requests, self.request.query_params)
        return requests

    def get_permissions(self) -> list[BasePermission]:
        if self.action in ("update", "partial_update"):
            return [FeedbackAccess()]
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
            actor=feedback.Actor.of(request),
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

    permission_classes = [FeedbackAccess]
    throttle_scope = "predict"
    parser_classes = [MultiPartParser, FormParser]
    serializer_class = BulkFeedbackSerializer

    @openapi.bulk_feedback_schema
    @extend_schema(responses={200: BulkFeedbackResultSerializer})
    def post(self, request: Request) -> Response:
        data = upload_form(self, request)
        result = feedback.give_many(
            upload=data["file"], actor=feedback.Actor.of(request), atomic=data["atomic"]
        )
        return Response(BulkFeedbackResultSerializer(result).data)


class ABTestViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet[ABTest],
):
    throttle_scope = "management"
    queryset = ABTest.objects.select_related("parent_mlalgorithm_1", "parent_mlalgorithm_2")
    serializer_class = ABTestSerializer


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


class PredictView(PredictAccessMixin, APIView):
    """``POST /api/v1/<endpoint_name>/predict?status=&version=`` with one record as a JSON
    object (or form fields). Answers the prediction and the ``request_id`` it is logged as."""

    permission_classes = [PredictAccess]
    throttle_scope = "predict"
    renderer_classes = [JSONRenderer, ExampleFormRenderer]

    def form_example(self) -> dict[str, Any] | None:
        """The first example record of the model that would answer, for the browsable
        API's form; None when no model would (the page then says why on POST)."""
        params = self.request.query_params
        try:
            algorithms = selectors.algorithms_for_prediction(
                endpoint_name=self.kwargs["endpoint_name"],
                status=params.get("status") or settings.PREDICT_DEFAULT_STATUS,
                version=params.get("version"),
            )
        except ServiceError:
            return None
        examples = algorithms[0].example if algorithms else None
        return dict(examples[0]) if examples and isinstance(examples[0], dict) else None

    @openapi.predict_schema
    def post(self, request: Request, endpoint_name: str) -> Response:
        params = request.query_params
        record = _record(request.data)
        if not record:  # a 404 for an unknown endpoint comes first, whatever the body
            selectors.check_endpoint(endpoint_name)
            # Refused even where every feature may be missing (the Adult models fill
            # them in): an answer made of nothing but defaults is a client's mistake.
            raise InvalidInput("The body is empty; send the record's features as a JSON object.")
        [prediction] = serving.predict(
            endpoint_name=endpoint_name,
            records=[record],
            status=params.get("status") or settings.PREDICT_DEFAULT_STATUS,  # checked there
            version=_short("version", params.get("version"), 128),
            assignment_key=assignment_key(request),
            user_id=feedback.Actor.of(request).user_id,
        )
        return Response(prediction)


class CSVRenderer(BaseRenderer):
    """Lets clients ask for CSV (``Accept: text/csv`` or ``?format=csv``). The CSV answer
    itself is streamed by the view; errors are always answered as JSON."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return JSONRenderer().render(data)


class BatchPredictView(PredictAccessMixin, GenericAPIView[Any]):
    """``POST /api/v1/batch-predict``: a CSV file (multipart field ``file``) scored row by
    row in one pass; ``endpoint`` (optional with one endpoint), ``status``, ``version`` as
    form fields or query parameters. Answers JSON, or with ``Accept: text/csv`` the uploaded
    rows plus ``request_id``, ``label`` and ``probability``."""

    permission_classes = [PredictAccess]
    throttle_scope = "predict"
    parser_classes = [MultiPartParser, FormParser]
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer, CSVRenderer]
    serializer_class = BatchPredictSerializer

    @openapi.batch_schema
    def post(self, request: Request) -> HttpResponseBase:
        data = upload_form(self, request)
        upload = data["file"]
        actor = feedback.Actor.of(request)
        result = batch.score_csv(
            upload=upload,
            endpoint_name=data.get("endpoint"),
            status=data.get("status", settings.PREDICT_DEFAULT_STATUS),
            version=data.get("version"),
            user_id=actor.user_id,
            client=actor.label,
        )
        if request.accepted_renderer.format == "csv":
            return StreamingHttpResponse(
                batch_output.csv_stream(result, upload), content_type="text/csv; charset=utf-8"
            )
        if request.accepted_renderer.format == "api":  # a person in the browsable API
            return Response(
                {**batch_output.summary(result), "predictions": batch_output.predictions(result)}
            )
        return StreamingHttpResponse(
            batch_output.json_stream(result), content_type="application/json"
        )

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        if (
            getattr(self.request, "accepted_renderer", None)
            and self.request.accepted_renderer.format == "csv"
        ):
            self.request.accepted_renderer = JSONRenderer()
            self.request.accepted_media_type = JSONRenderer.media_type
        return response


def upload_form(
    view: GenericAPIView[Any],
    request: Request,
    *,
    field: str = "file",
    setting: str = "BATCH_MAX_UPLOAD_BYTES",
) -> dict[str, Any]:
    """The view's form, validated, its file ``field`` at most ``setting`` bytes: refused
    before the body is read when the client says how big it is (64 KiB left for the other
    fields), and by the file's own size after."""
    limit = getattr(settings, setting)
    if int(request.META.get("CONTENT_LENGTH") or 0) > limit + 64 * 1024:
        raise _too_large(setting)
    form = view.get_serializer(data=_form_fields(request))
    form.is_valid(raise_exception=True)
    data: dict[str, Any] = form.validated_data
    if data[field].size > limit:
        raise _too_large(setting)
    return data


def _form_fields(request: Request) -> dict[str, Any]:
    """The form fields, with the query parameters as defaults. Without a body, DRF's
    request.data is a plain {} rather than a QueryDict."""
    fields = request.data.dict() if isinstance(request.data, QueryDict) else {}
    return {**request.query_params.dict(), **fields}


def _too_large(setting: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The file is larger than {getattr(settings, setting)} bytes ({setting})."
    )


def assignment_key(request: Request) -> str | None:
    """The client's ``X-Assignment-Key`` header (sticky A/B arms), or None."""
    return _short("X-Assignment-Key", request.headers.get("X-Assignment-Key"), 256)


def _short(name: str, value: str | None, limit: int) -> str | None:
    # Checked by hand, not by a serializer: on the predict path a serializer costs more
    # than the compiled model.
    if value and len(value) > limit:
        raise InvalidInput(
            f"{name} is too long ({limit} characters at most).",
            details={name: [f"Ensure this field has no more than {limit} characters."]},
        )
    return value or None


class StopABTestView(APIView):
    """``POST /api/v1/stop_ab_test/<id>`` (staff): evaluate the test, set the statuses it
    decides and answer the test with its summary. Body: ``{"force": false}``."""

    throttle_scope = "management"
    openapi_error_codes = (409,)  # the test has already ended (openapi.add_error_responses)
    required_permissions = ("endpoints.change_abtest",)  # permissions.IsOperatorOrReadOnly

    @extend_schema(request=StopABTestSerializer, responses={200: ABTestSerializer})
    def post(self, request: Request, abtest_id: int) -> Response:
        body = StopABTestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        abtest = ab_testing.stop(
            abtest_id=abtest_id,
            stopped_by=request.user.get_username(),
            force=body.validated_data["force"],
        )
        return Response(ABTestSerializer(abtest, context={"request": request}).data)


def _record(data: Any) -> dict[str, Any]:
    if isinstance(data, QueryDict):  # form-encoded: one value per field
        data = data.dict()
    if not isinstance(data, Mapping):
        raise InvalidInput("The body must be one JSON object of feature names and values.")
    return dict(data)


# -- Django-level errors (URLs that match no view, crashes outside DRF) -------------------


def _json_error(error: ServiceError) -> JsonResponse:
    return JsonResponse(error_body(error.code, error.message), status=error.status_code)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _json_error(NotFound(f"No route matches {request.path}."))


def server_error(request: HttpRequest) -> JsonResponse:
    return _json_error(ServiceError())


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    # Django's own 400s (a Host header not in ALLOWED_HOSTS, a suspicious request): in the
    # same shape as every other error, not an HTML page.
    return _json_error(BadRequest("The request was refused (check the Host header and body)."))


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _json_error(Forbidden())
