"""A/B tests over HTTP: start one (``POST /api/v1/abtests``), read them, stop one
(``POST /api/v1/stop_ab_test/<id>``), and its report page (``/abtests/<id>/report``)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.endpoints import policy
from apps.endpoints.experiments import ab_testing, report
from apps.endpoints.models import ABTest
from apps.endpoints.serializers import ABTestSerializer, StopABTestSerializer


class ABTestViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet[ABTest],
):
    write_permission = policy.START_AB_TEST
    throttle_scope = "management"
    queryset = ABTest.objects.select_related("parent_mlalgorithm_1", "parent_mlalgorithm_2")
    serializer_class = ABTestSerializer


class StopABTestView(APIView):
    """``POST /api/v1/stop_ab_test/<id>`` (staff): evaluate the test, set the statuses it
    decides and answer the test with its summary. Body: ``{"force": false}``."""

    throttle_scope = "management"
    openapi_error_codes = (409,)  # the test has already ended (openapi.add_error_responses)
    write_permission = policy.STOP_AB_TEST

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


def abtest_report(request: HttpRequest, abtest_id: int) -> HttpResponse:
    """The report page: server-rendered HTML with an inline SVG (``experiments/report.py``)."""
    abtest = get_object_or_404(
        ABTest.objects.select_related("parent_mlalgorithm_1", "parent_mlalgorithm_2"),
        pk=abtest_id,
    )
    return render(request, "endpoints/abtest_report.html", report.context(abtest))
