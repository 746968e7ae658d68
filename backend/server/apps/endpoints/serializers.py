"""Input and output shapes of the API. Writes go through ``services``, never ``save()``."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from apps.endpoints import ab_testing, selectors, services
from apps.endpoints.models import ABTest, Endpoint, MLAlgorithm, MLAlgorithmStatus, MLRequest
from apps.ml import registry as ml_registry


class EndpointSerializer(serializers.ModelSerializer[Endpoint]):
    class Meta:
        model = Endpoint
        fields = ["id", "name", "owner", "created_at"]
        read_only_fields = fields


class MLAlgorithmSerializer(serializers.ModelSerializer[MLAlgorithm]):
    current_status = serializers.SerializerMethodField()
    loaded_at = serializers.SerializerMethodField()

    class Meta:
        model = MLAlgorithm
        fields = [
            "id",
            "name",
            "description",
            "code",
            "version",
            "owner",
            "created_at",
            "parent_endpoint",
            "current_status",
            "wrapper",
            "artifact",
            "artifact_sha256",
            "sklearn_version",
            "features",
            "metrics",
            "loaded_at",
        ]
        read_only_fields = fields

    def get_loaded_at(self, algorithm: MLAlgorithm) -> str | None:
        """When this server process loaded the model (each worker has its own); null when it
        has not served it yet."""
        loaded = ml_registry.get_registry().loaded_at.get(algorithm.pk)
        return loaded.isoformat() if loaded else None

    def get_current_status(self, algorithm: MLAlgorithm) -> str | None:
        status = selectors.current_status(algorithm)
        return status.status if status else None


def _default_created_by(serializer: serializers.Serializer[Any]) -> str:
    request = serializer.context.get("request")
    user = getattr(request, "user", None)
    return str(user.get_username()) if user and user.is_authenticated else ""


class MLAlgorithmStatusSerializer(serializers.ModelSerializer[MLAlgorithmStatus]):
    created_by = serializers.CharField(max_length=128, required=False)

    class Meta:
        model = MLAlgorithmStatus
        fields = ["id", "status", "active", "created_by", "created_at", "parent_mlalgorithm"]
        read_only_fields = ["id", "active", "created_at"]
        # The one-active-status constraint is kept by the service, which deactivates the
        # previous status; DRF's derived uniqueness check would refuse every change.
        validators: list[Any] = []

    def create(self, validated_data: dict[str, Any]) -> MLAlgorithmStatus:
        return services.set_algorithm_status(
            algorithm=validated_data["parent_mlalgorithm"],
            status=validated_data["status"],
            created_by=validated_data.get("created_by") or _default_created_by(self),
        )


class MLRequestSerializer(serializers.ModelSerializer[MLRequest]):
    """Everything is read-only except ``feedback``: the ground truth, sent later."""

    feedback = serializers.CharField(max_length=128, allow_null=True, trim_whitespace=True)

    class Meta:
        model = MLRequest
        fields = [
            "id",
            "input_data",
            "full_response",
            "response",
            "feedback",
            "created_at",
            "parent_mlalgorithm",
        ]
        read_only_fields = [f for f in fields if f != "feedback"]

    def update(self, instance: MLRequest, validated_data: dict[str, Any]) -> MLRequest:
        if "feedback" not in validated_data:  # a PATCH without it: nothing to change
            return instance
        return services.record_feedback(request=instance, feedback=validated_data["feedback"])


class ABTestSerializer(serializers.ModelSerializer[ABTest]):
    """An A/B test. Created by staff (``ab_testing.create``); the decision rule
    (``arm_2_share``, ``alpha``, ``require_significance``) is fixed at creation."""

    created_by = serializers.CharField(max_length=128, required=False)
    report_url = serializers.SerializerMethodField()

    class Meta:
        model = ABTest
        fields = [
            "id",
            "title",
            "created_by",
            "created_at",
            "state",
            "ended_at",
            "stopped_by",
            "parent_mlalgorithm_1",
            "parent_mlalgorithm_2",
            "arm_2_share",
            "alpha",
            "require_significance",
            "previous_status_1",
            "previous_status_2",
            "summary",
            "summary_json",
            "report_url",
        ]
        read_only_fields = [
            "id",
            "created_at",
            "state",
            "ended_at",
            "stopped_by",
            "previous_status_1",
            "previous_status_2",
            "summary",
            "summary_json",
        ]

    def get_report_url(self, abtest: ABTest) -> str:
        path = reverse("abtest-report", args=[abtest.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    def create(self, validated_data: dict[str, Any]) -> ABTest:
        optional = {
            k: validated_data[k]
            for k in ("arm_2_share", "alpha", "require_significance")
            if k in validated_data
        }
        return ab_testing.create(
            title=validated_data["title"],
            created_by=validated_data.get("created_by") or _default_created_by(self),
            parent_mlalgorithm_1=validated_data["parent_mlalgorithm_1"],
            parent_mlalgorithm_2=validated_data["parent_mlalgorithm_2"],
            **optional,
        )


class StopABTestSerializer(serializers.Serializer[Any]):
    # End the test even when an arm has no feedback, restoring both previous statuses.
    force = serializers.BooleanField(default=False)


class BatchPredictSerializer(serializers.Serializer[Any]):
    """The upload form (multipart); ``endpoint``, ``status`` and ``version`` may also be
    given as query parameters."""

    file = serializers.FileField(help_text="CSV with a header row naming the columns.")
    endpoint = serializers.SlugField(max_length=128, required=False)
    status = serializers.ChoiceField(choices=MLAlgorithmStatus.Status.choices, required=False)
    version = serializers.CharField(max_length=128, required=False)
