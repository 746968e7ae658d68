"""The catalogue over HTTP: endpoints, versions with their model cards, and statuses.

Reading is open; registering a model file and changing a status need an operator
(``policy.Operators``)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.throttling import BaseThrottle

from apps.endpoints import policy
from apps.endpoints.api.inputs import short, upload_form
from apps.endpoints.api.parsers import JSONParser
from apps.endpoints.catalogue.register import read_reference, register_upload
from apps.endpoints.catalogue.selectors import algorithms_with_current_status, forget_selections
from apps.endpoints.models import Endpoint, MLAlgorithm, MLAlgorithmStatus
from apps.endpoints.monitoring import references
from apps.endpoints.serializers import (
    EndpointSerializer,
    MLAlgorithmSerializer,
    MLAlgorithmStatusSerializer,
    ReferenceSerializer,
    ReferenceUploadSerializer,
    RegisteredSerializer,
    RegisterModelSerializer,
    class_list,
)
from apps.endpoints.views import drift


class EndpointViewSet(viewsets.ReadOnlyModelViewSet[Endpoint]):
    """Endpoints are made by registering their first version; operators who may register
    get a 405 for any other write, everyone else a 403."""

    write_permission = policy.REGISTER_MODEL
    queryset = Endpoint.objects.all()
    serializer_class = EndpointSerializer

    @extend_schema(parameters=[drift.VERSION], responses={200: drift.DRIFT_RESPONSE})
    @action(detail=True, methods=["get"])
    def drift(self, request: Request, pk: str) -> Response:
        """Input and prediction drift of the endpoint's serving versions (or ``?version=``)
        against each one's reference (docs/drift.md)."""
        version = short("version", request.query_params.get("version"), 128)
        return Response(drift.endpoint_drift(self.get_object(), version))


class MLAlgorithmViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet[MLAlgorithm]):
    """The algorithms and their model cards. ``POST`` (multipart, staff allowed to add
    algorithms) registers a model file as a new version: ``catalogue.register_model``."""

    queryset = algorithms_with_current_status()
    serializer_class = MLAlgorithmSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    throttle_scope = "management"
    openapi_error_codes = (409,)  # the endpoint already has this name and version

    @property
    def write_permission(self) -> str:
        # A new version is adding an algorithm; its reference is changing one.
        return policy.SET_REFERENCE if self.action == "reference" else policy.REGISTER_MODEL

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        if self.action == "create":
            return RegisterModelSerializer
        if self.action == "reference":
            return ReferenceUploadSerializer
        return MLAlgorithmSerializer

    def get_throttles(self) -> list[BaseThrottle]:
        # A registration is a management write; reading the catalogue is not limited.
        return super().get_throttles() if self.action in ("create", "reference") else []

    @extend_schema(
        request={"multipart/form-data": ReferenceUploadSerializer},
        responses={201: ReferenceSerializer},
    )
    @action(detail=True, methods=["post"])
    def reference(self, request: Request, pk: str) -> Response:
        """Add or renew the version's drift reference from a CSV file of its features
        (``reference``): the old profile stays in its history, and the window starts over."""
        algorithm = self.get_object()
        data = upload_form(self, request, field="reference", setting="DRIFT_REFERENCE_MAX_BYTES")
        upload = data["reference"]
        reference, _ = references.renew(
            algorithm,
            read_reference(upload),
            file_name=upload.name,
            created_by=request.user.get_username(),
        )
        forget_selections()  # this process uses the new reference at once; others within
        # PREDICT_CACHE_SECONDS, as a status change
        return Response(ReferenceSerializer(reference).data, status=201)

    @extend_schema(
        request={"multipart/form-data": RegisterModelSerializer},
        responses={201: RegisteredSerializer},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = upload_form(self, request, field="artifact", setting="MODEL_MAX_UPLOAD_BYTES")
        registered = register_upload(
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
            classes=class_list(data.get("classes", "")),
            reference=data.get("reference"),
            reference_name=getattr(data.get("reference"), "name", ""),
        )
        algorithm = algorithms_with_current_status().get(pk=registered.algorithm.pk)
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

    write_permission = policy.CHANGE_STATUS
    throttle_scope = "management"
    queryset = MLAlgorithmStatus.objects.all()
    serializer_class = MLAlgorithmStatusSerializer
