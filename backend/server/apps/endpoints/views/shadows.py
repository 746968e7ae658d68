"""Shadows over HTTP: start one (``POST /api/v1/shadows``), read them, end one
(``POST /api/v1/shadows/<id>/stop``, ``/promote``, ``/ab_test``), and its report page
(``/shadows/<id>/report``)."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.endpoints import policy
from apps.endpoints.models import Shadow
from apps.endpoints.serializers import ABTestSerializer, ShadowABTestSerializer, ShadowSerializer
from apps.endpoints.shadows import report
from apps.endpoints.shadows import services as shadows


class ShadowViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet[Shadow],
):
    throttle_scope = "management"
    serializer_class = ShadowSerializer
    openapi_error_codes = (409,)  # one running shadow per endpoint; ended already

    def get_queryset(self) -> QuerySet[Shadow]:
        return Shadow.objects.select_related("candidate", "endpoint")

    @property
    def write_permission(self) -> str:
        # Starting one is adding a shadow; ending one (each action) is changing it.
        return policy.START_SHADOW if self.action == "create" else policy.END_SHADOW

    def get_serializer_context(self) -> dict[str, object]:
        return {**super().get_serializer_context(), "many": self.action == "list"}

    @extend_schema(request=None, responses={200: ShadowSerializer})
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str) -> Response:
        """End the shadow; its candidate gets its previous status back."""
        shadow = shadows.stop(
            shadow_id=self.get_object().pk, stopped_by=request.user.get_username()
        )
        return Response(self.get_serializer(shadow).data)

    @extend_schema(request=None, responses={200: ShadowSerializer})
    @action(detail=True, methods=["post"])
    def promote(self, request: Request, pk: str) -> Response:
        """End the shadow with its candidate in production (the production version goes to
        testing); 409 while an A/B test runs on the endpoint."""
        shadow = shadows.promote(
            shadow_id=self.get_object().pk, promoted_by=request.user.get_username()
        )
        return Response(self.get_serializer(shadow).data)

    @extend_schema(request=ShadowABTestSerializer, responses={201: ABTestSerializer})
    @action(detail=True, methods=["post"])
    def ab_test(self, request: Request, pk: str) -> Response:
        """End the shadow into an A/B test: production (arm 1) against its candidate (arm 2).
        Needs the permission to start A/B tests too."""
        if not policy.may(request.user, policy.START_AB_TEST):
            self.permission_denied(
                request, f"This needs a staff user with the permission: {policy.START_AB_TEST}."
            )
        shadow_id = self.get_object().pk  # a 404 for an id that is not one
        body = ShadowABTestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        _, abtest = shadows.start_ab_test(
            shadow_id=shadow_id, created_by=request.user.get_username(), **body.validated_data
        )
        return Response(
            ABTestSerializer(abtest, context={"request": request}).data,
            status=status.HTTP_201_CREATED,
        )


def shadow_report(request: HttpRequest, shadow_id: int) -> HttpResponse:
    """The report page: server-rendered HTML with inline SVGs (``shadows/report.py``)."""
    shadow = get_object_or_404(Shadow.objects.select_related("candidate", "endpoint"), pk=shadow_id)
    return render(request, "endpoints/shadow_report.html", report.context(shadow))
