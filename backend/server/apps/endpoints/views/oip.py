"""The Open Inference Protocol (V2), REST, over the one serving path (``api/oip.py`` says
what its requests mean): ``GET /v2`` (server metadata), ``GET /v2/models/{name}[/versions/
{version}]`` (model metadata), ``.../ready``, ``.../config`` (Triton's model configuration,
which its perf_analyzer asks for) and ``POST .../infer``. ``/v2/health/live`` and
``/v2/health/ready`` are probes, answered by ``apps/ops`` before the host check.

``{name}`` is the endpoint; ``versions/{version}`` the version string, selected among the
endpoint's versions with the request's ``status`` parameter (default
``PREDICT_DEFAULT_STATUS``), exactly as ``?version=`` on our predict route; without it, the
endpoint's production version, or its running A/B test with ``"status": "ab_testing"``.
Errors answer ``{"error": "<message>"}`` with our API's status codes."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.errors import InvalidInput, ModelUnavailable
from apps.endpoints import policy
from apps.endpoints.api import oip
from apps.endpoints.api.errors import handle as handle_error
from apps.endpoints.api.inputs import assignment_key, short
from apps.endpoints.api.openapi import V2ErrorSchema
from apps.endpoints.api.parsers import AnyTypeJSONParser
from apps.endpoints.models import MLAlgorithm
from apps.endpoints.serving import pipeline, routing
from apps.endpoints.serving.predict import serve
from apps.ml import registry as ml_registry
from apps.ml.signature import Signature

SERVER_NAME = "ml_pipeline"
EXTENSIONS = ["model_configuration"]  # GET .../config, as Triton's tools ask for it
V2_ERROR = OpenApiResponse(response=V2ErrorSchema, description="The protocol's error shape.")


def _server_version() -> str:
    try:
        return version("django")  # the service has no package version of its own
    except PackageNotFoundError:  # pragma: no cover - Django is always installed
        return "unknown"


class V2View(APIView):
    """The protocol's error shape over our one exception handler: the same status codes
    and messages, as ``{"error": "<message>"}``."""

    openapi_error_schema = "#/components/schemas/V2ErrorSchema"

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        error = response.data.get("error") if isinstance(response.data, dict) else None
        if isinstance(error, dict):
            response.data = {"error": str(error.get("message", ""))}
        return response

    def get_exception_handler(self) -> Any:
        return handle_error


class ServerMetadataView(V2View):
    """``GET /v2``: the server's name, version and the protocol extensions it serves."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        return Response(
            {"name": SERVER_NAME, "version": _server_version(), "extensions": EXTENSIONS}
        )


def _selected(endpoint_name: str, model_version: str | None, status: str | None) -> MLAlgorithm:
    """The version a request names (see the module doc), by predict's rules: 404 naming
    what did not match, 400 ``ambiguous_algorithm`` when several match."""
    found = routing.candidate_algorithms(
        endpoint_name=endpoint_name,
        status=short("status", status, 32) or settings.PREDICT_DEFAULT_STATUS,
        version=short("version", model_version, 128),
    )
    return found[0]


def _signature(algorithm: MLAlgorithm) -> Signature:
    return Signature.from_card(
        features=algorithm.features,
        task=algorithm.task,
        classes=algorithm.classes,
        outputs=algorithm.outputs,
    )


class ModelMetadataView(V2View):
    """``GET /v2/models/{name}[/versions/{version}]``: the inputs (one tensor per feature)
    and outputs of the version that would answer, and the endpoint's version strings."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 404: V2_ERROR})
    def get(self, request: Request, model_name: str, model_version: str | None = None) -> Response:
        algorithm = _selected(model_name, model_version, request.query_params.get("status"))
        versions = sorted(
            set(
                MLAlgorithm.objects.filter(parent_endpoint__name=model_name).values_list(
                    "version", flat=True
                )
            )
        )
        body = oip.model_metadata(
            name=model_name,
            versions=versions,
            signature=_signature(algorithm),
            platform=f"{algorithm.wrapper}_{oip.PROTOCOL}",
        )
        return Response(body)


class ModelReadyView(V2View):
    """``GET /v2/models/{name}[/versions/{version}]/ready``: 200 when the version loads
    and serves here, 400 when it does not (the protocol's 4xx for false)."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 400: V2_ERROR, 404: V2_ERROR})
    def get(self, request: Request, model_name: str, model_version: str | None = None) -> Response:
        algorithm = _selected(model_name, model_version, request.query_params.get("status"))
        try:
            ml_registry.get_registry().get(algorithm)
        except ModelUnavailable as exc:
            return Response({"error": f"Not ready: {exc.message}"}, status=400)
        return Response({"name": model_name, "ready": True})


class ModelConfigView(V2View):
    """``GET /v2/models/{name}[/versions/{version}]/config``: the version as Triton's model
    configuration describes a model (``max_batch_size`` 0: every input's first dimension is
    the batch), for Triton's tools (perf_analyzer reads it before it loads a server)."""

    TYPES = {
        "FP64": "TYPE_FP64",
        "INT64": "TYPE_INT64",
        "BOOL": "TYPE_BOOL",
        "BYTES": "TYPE_STRING",
    }

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 404: V2_ERROR})
    def get(self, request: Request, model_name: str, model_version: str | None = None) -> Response:
        algorithm = _selected(model_name, model_version, request.query_params.get("status"))
        signature = _signature(algorithm)
        metadata = oip.model_metadata(
            name=model_name, versions=[algorithm.version], signature=signature, platform=""
        )

        def described(tensor: dict[str, Any]) -> dict[str, Any]:
            return {
                "name": tensor["name"],
                "data_type": self.TYPES[tensor["datatype"]],
                "dims": tensor["shape"],
            }

        return Response(
            {
                "name": model_name,
                "platform": f"{algorithm.wrapper}_{oip.PROTOCOL}",
                "backend": "python",
                "max_batch_size": 0,
                "input": [described(t) for t in metadata["inputs"]],
                "output": [described(t) for t in metadata["outputs"]],
            }
        )


def _binary_part(request: Request) -> bool:
    """Whether binary tensors follow the JSON header (Triton's binary data extension):
    ``Inference-Header-Content-Length`` shorter than the body. Triton's C++ client (its
    perf_analyzer) sends the header with JSON tensors too, equal to the body's length."""
    header = request.headers.get("Inference-Header-Content-Length")
    if header is None:
        return False
    try:
        return int(header) < int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return True


class InferView(policy.PredictAccessMixin, V2View):
    """``POST /v2/models/{name}[/versions/{version}]/infer``: named tensors in, named tensors
    out; n rows are a batch of n through the same pipeline as predict, each logged."""

    permission_classes = [policy.PredictAccess]
    throttle_scope = "predict"
    parser_classes = [AnyTypeJSONParser]

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiTypes.OBJECT, 400: V2_ERROR, 404: V2_ERROR},
    )
    def post(self, request: Request, model_name: str, model_version: str | None = None) -> Response:
        if _binary_part(request):
            raise InvalidInput(
                "Binary tensors (Triton's binary data extension) are not supported: send the "
                "tensors as JSON (binary_data=False in tritonclient)."
            )
        infer = oip.parse_infer(request.data)
        served = serve(
            endpoint_name=model_name,
            batch=pipeline.Batch.of_values(infer.values, infer.rows),
            status=infer.status or settings.PREDICT_DEFAULT_STATUS,
            version=short("version", model_version, 128),
            assignment_key=infer.assignment_key or assignment_key(request),
            user_id=policy.Actor.of(request).user_id,
            check=lambda signature: oip.check_outputs(infer, signature),
        )
        body = oip.infer_response(
            model_name=model_name,
            model_version=served.algorithm.version,
            request=infer,
            signature=served.answer.signature,
            output=served.output,
            request_ids=served.request_ids,
            feedback_tokens=served.feedback_tokens(),
        )
        return Response(body)
