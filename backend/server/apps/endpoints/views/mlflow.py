"""MLflow's scoring server's routes (``mlflow models serve``), so that its clients change a
URL, not their code: ``POST /api/v1/<endpoint_name>/invocations``; and at the server's
root, for a service of one endpoint, ``POST /invocations`` and ``GET /ping`` (``/health``).
The format is ``api/mlflow.py``'s; the predictions are ``serving/predict.py: serve``'s, as
every route's (docs/protocols.md, "MLflow's scoring format")."""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.endpoints import policy
from apps.endpoints.api import mlflow, openapi
from apps.endpoints.api.errors import error_body
from apps.endpoints.api.inputs import assignment_key, short
from apps.endpoints.api.parsers import JSONParser
from apps.endpoints.catalogue import demo
from apps.endpoints.catalogue.selectors import endpoint_names
from apps.endpoints.serving import routing
from apps.endpoints.serving.predict import serve
from apps.ml.registry import signature_of
from apps.ml.signature import Signature


class _Invocations(policy.PredictAccessMixin, APIView):
    """What both ``/invocations`` routes do: read the body in MLflow's format, serve its
    records with the version ``?status=``/``?version=`` (and ``X-Assignment-Key``) select,
    as predict does, and answer in MLflow's format."""

    permission_classes = [policy.PredictAccess]
    throttle_scope = "predict"
    parser_classes = [JSONParser]  # and CSV, read by _read itself; anything else: 415
    renderer_classes = [JSONRenderer]

    def invoke(self, request: Request, endpoint_name: str) -> Response:
        params = request.query_params
        status = params.get("status") or settings.PREDICT_DEFAULT_STATUS  # checked in serve
        version = short("version", params.get("version"), 128)
        invocation = _read(request)
        batch = invocation.batch(lambda: _signatures(endpoint_name, status, version))
        served = serve(
            endpoint_name=endpoint_name,
            batch=batch,
            status=status,
            version=version,
            assignment_key=assignment_key(request),
            user_id=policy.Actor.of(request).user_id,
        )
        return Response(mlflow.answer(served, probabilities=invocation.probabilities))


class InvocationsView(_Invocations):
    """``POST /api/v1/<endpoint_name>/invocations``: MLflow's scoring format (JSON's four
    forms, or CSV) for the endpoint the URL names."""

    @openapi.mlflow_schema(
        operation_id="mlflow_endpoint_invocations",
        description="mlflow models serve's /invocations for the endpoint the path names: "
        "a JSON body in one of MLflow's four forms, or CSV with a header row. Answers "
        '{"predictions": [...]} as MLflow does, with request_ids and feedback_tokens beside '
        "it (docs/protocols.md, section MLflow's scoring format).",
    )
    def post(self, request: Request, endpoint_name: str) -> Response:
        return self.invoke(request, endpoint_name)


class RootInvocationsView(_Invocations):
    """``POST /invocations``, where ``mlflow models serve`` has it: for a service that holds
    one endpoint, that one; with several, a 400 naming them."""

    @openapi.mlflow_schema(
        operation_id="mlflow_invocations",
        description="As /api/v1/{endpoint_name}/invocations, for the service's only "
        "endpoint (with several: a 400 naming them).",
    )
    def post(self, request: Request) -> Response:
        demo.ensure_registered()  # the demo models, where on, count among the endpoints
        names = endpoint_names(limit=mlflow.MAX_NAMED + 1)
        return self.invoke(request, mlflow.sole_endpoint(names))


@csrf_exempt  # it changes nothing: another method is a 405 in our shape, not CSRF's 403 page
def ping(request: HttpRequest) -> HttpResponse:
    """``GET /ping`` and ``/health`` as ``mlflow models serve`` answers them while it runs:
    200 and a newline. Plain Django like ``/healthz`` (no authentication, no content
    negotiation: a load balancer's probe); readiness is ``/readyz``'s."""
    if request.method not in ("GET", "HEAD"):
        return JsonResponse(
            error_body("method_not_allowed", f'Method "{request.method}" not allowed.'),
            status=405,
            headers={"Allow": "GET, HEAD"},
        )
    return HttpResponse("\n", content_type="text/plain; charset=utf-8")


def _read(request: Request) -> mlflow.Invocation:
    probabilities = mlflow.flag("probabilities", request.query_params.get("probabilities"))
    if request.content_type.split(";")[0].strip().lower() == "text/csv":
        # The body as Django keeps it, read up to PROTOCOL_MAX_BODY_BYTES (a 413 past it) by
        # server/bodies.py; a DRF parser of our own would be handed the stream instead.
        body: bytes = request.body
        return mlflow.read_csv(body, probabilities=probabilities)
    return mlflow.read_json(request.data, probabilities=probabilities)


def _signatures(endpoint_name: str, status: str, version: str | None) -> Sequence[Signature]:
    """The signatures of the versions that may answer (the same selection ``serve``
    makes; an A/B test's arms), from their cards: no model is loaded for them."""
    algorithms = routing.candidate_algorithms(
        endpoint_name=endpoint_name, status=status, version=version
    )
    return [signature_of(algorithm) for algorithm in algorithms]
