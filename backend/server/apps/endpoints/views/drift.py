"""Drift over HTTP: ``GET /api/v1/<endpoint_name>/drift`` and ``GET
/api/v1/endpoints/<id>/drift`` (the serving versions, or ``?version=``), a version's report
page (``/mlalgorithms/<id>/drift``), and ``POST /api/v1/mlalgorithms/<id>/reference``
to add or renew a version's reference (``monitoring/``)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.errors import AlgorithmNotFound, EndpointNotFound
from apps.endpoints.api.inputs import short
from apps.endpoints.catalogue.selectors import algorithms_with_current_status
from apps.endpoints.catalogue.statuses import SERVING
from apps.endpoints.models import Endpoint, MLAlgorithm
from apps.endpoints.monitoring import report, selectors

VERSION = OpenApiParameter(
    "version",
    str,
    description="One version string (e.g. 0.0.1); default: the versions that serve "
    "(production and A/B test arms).",
)
DRIFT_RESPONSE = OpenApiResponse(
    response=OpenApiTypes.OBJECT,
    description=(
        "Per version: its reference (rows, source), its window (records, size, the minimum "
        "before flags), how many features drift, and per feature (inputs, then the outputs "
        "'label' or 'prediction'): the measures (psi; wasserstein for numbers, js for "
        "categories), the thresholds in force (the larger of the floor and the one fitted to "
        "the reference), the data-quality shares (missing, reference_missing, invalid, "
        "unseen, out_of_range), the flags, and both histograms. docs/drift.md."
    ),
)


def endpoint_drift(endpoint: Endpoint, version: str | None) -> dict[str, Any]:
    versions = algorithms_with_current_status().filter(parent_endpoint=endpoint)
    if version is not None:
        chosen = list(versions.filter(version=version))
        if not chosen:
            raise AlgorithmNotFound(f"Endpoint '{endpoint.name}' has no version '{version}'.")
    else:
        chosen = list(versions.filter(statuses__active=True, statuses__status__in=sorted(SERVING)))
    return {
        "endpoint": endpoint.name,
        "versions": [selectors.version_drift(algorithm).to_dict() for algorithm in chosen],
    }


class EndpointDriftView(APIView):
    """``GET /api/v1/<endpoint_name>/drift?version=``: beside predict."""

    @extend_schema(parameters=[VERSION], responses={200: DRIFT_RESPONSE})
    def get(self, request: Request, endpoint_name: str) -> Response:
        endpoint = Endpoint.objects.filter(name=endpoint_name).first()
        if endpoint is None:
            raise EndpointNotFound(f"No endpoint named '{endpoint_name}'.")
        version = short("version", request.query_params.get("version"), 128)
        return Response(endpoint_drift(endpoint, version))


def drift_report(request: HttpRequest, algorithm_id: int) -> HttpResponse:
    """The report page: server-rendered HTML with inline SVG histograms."""
    algorithm = get_object_or_404(
        MLAlgorithm.objects.select_related("parent_endpoint"), pk=algorithm_id
    )
    return render(request, "endpoints/drift_report.html", report.context(algorithm))
