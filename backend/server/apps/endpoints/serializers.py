"""Input and output shapes of the API. Writes go through the services (``catalogue``,
``ab_testing``, ``feedback``), never ``save()``."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.endpoints.catalogue.selectors import current_status
from apps.endpoints.catalogue.statuses import set_algorithm_status
from apps.endpoints.experiments import ab_testing
from apps.endpoints.models import (
    ABTest,
    DriftReference,
    Endpoint,
    MLAlgorithm,
    MLAlgorithmStatus,
    MLRequest,
    Shadow,
)
from apps.endpoints.shadows import comparison
from apps.endpoints.shadows import services as shadows
from apps.ml import registry as ml_registry


class EndpointSerializer(serializers.ModelSerializer[Endpoint]):
    class Meta:
        model = Endpoint
        fields = ["id", "name", "owner", "created_at"]
        read_only_fields = fields


class MLAlgorithmSerializer(serializers.ModelSerializer[MLAlgorithm]):
    """An algorithm with its model card: the signature (``features`` with their types,
    required or optional, allowed categories; ``task``, ``classes``, ``outputs``), an
    ``example`` record, which engine serves it and why (``serving``), training metrics."""

    current_status = serializers.SerializerMethodField()
    loaded_at = serializers.SerializerMethodField()
    drift = serializers.SerializerMethodField()

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
            "task",
            "classes",
            "outputs",
            "example",
            "serving",
            "target_column",
            "loaded_at",
            "drift",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_drift(self, algorithm: MLAlgorithm) -> dict[str, Any]:
        """Drift monitoring: the version's reference (null: none, and drift is not
        computed), and where its report and numbers are."""
        found = getattr(algorithm, "current_references", None)
        if found is None:
            found = list(
                algorithm.drift_references.filter(replaced_at__isnull=True).defer("profile")
            )
        reference = found[0] if found else None
        return {
            "reference": None if reference is None else ReferenceSerializer(reference).data,
            "note": ""
            if reference is not None
            else "No reference profile: drift is not computed for this version until one is "
            "added (POST /api/v1/mlalgorithms/<id>/reference).",
            "report": reverse("drift-report", args=[algorithm.pk]),
            "api": reverse("endpoint-drift", args=[algorithm.parent_endpoint.name])
            + f"?version={algorithm.version}",
        }

    def get_loaded_at(self, algorithm: MLAlgorithm) -> str | None:
        """When this server process loaded the model (each worker has its own); null when it
        has not served it yet."""
        loaded = ml_registry.get_registry().loaded_at.get(algorithm.pk)
        return loaded.isoformat() if loaded else None

    def get_current_status(self, algorithm: MLAlgorithm) -> str | None:
        status = current_status(algorithm)
        return status.status if status else None


class RegisterModelSerializer(serializers.Serializer[Any]):
    """``POST /api/v1/mlalgorithms`` (multipart): a model file to register as a version."""

    artifact = serializers.FileField(
        help_text="A fitted model: a scikit-learn estimator or pipeline saved with "
        "skops.io.dump (.skops); a LightGBM booster's text (.txt) or an XGBoost model's "
        "JSON or UBJSON (.json, .ubj) from their own save_model; or joblib.dump where the "
        "operator allows pickle uploads (ALLOW_PICKLE_UPLOADS)."
    )
    endpoint = serializers.SlugField(max_length=128, help_text="Made on first use.")
    name = serializers.CharField(max_length=128)
    version = serializers.CharField(max_length=128)
    status = serializers.ChoiceField(
        choices=MLAlgorithmStatus.Status.choices, default=MLAlgorithmStatus.Status.TESTING
    )
    input_example = serializers.FileField(
        required=False,
        help_text="A CSV of a few input rows: feature types, which features may be missing, "
        "and the rows the model is checked on.",
    )
    target_column = serializers.CharField(
        max_length=128,
        required=False,
        allow_blank=True,
        help_text="The input example's (and batch files') column with the true value.",
    )
    description = serializers.CharField(max_length=1000, required=False, allow_blank=True)
    classes = serializers.CharField(
        max_length=10_000,
        required=False,
        allow_blank=True,
        help_text="A classifier's classes, comma-separated in the model's order, for a "
        "LightGBM or XGBoost file, which does not store them (default: 0, 1, ...).",
    )
    reference = serializers.FileField(
        required=False,
        help_text="A CSV sample of the inputs the model was made for (e.g. its training "
        "features): drift monitoring's reference. Without it, the input example serves when "
        "it has 500 rows or more; else drift is not computed until one is added.",
    )


class ReferenceUploadSerializer(serializers.Serializer[Any]):
    """``POST /api/v1/mlalgorithms/<id>/reference`` (multipart)."""

    reference = serializers.FileField(
        help_text="A CSV of the model's feature columns (its target column may be there too): "
        "a sample of the inputs it was made for. Drift is measured against its profile."
    )


class ReferenceSerializer(serializers.ModelSerializer[DriftReference]):
    class Meta:
        model = DriftReference
        fields = ["id", "algorithm", "source", "file_name", "rows", "created_by", "created_at"]
        read_only_fields = fields


def class_list(text: str) -> list[str]:
    """The upload form's comma-separated classes."""
    return [c.strip() for c in text.split(",") if c.strip()]


class RegisteredSerializer(MLAlgorithmSerializer):
    notes = serializers.ListField(
        child=serializers.CharField(),
        help_text="Warnings for whoever registered it (e.g. another scikit-learn version).",
    )

    class Meta(MLAlgorithmSerializer.Meta):
        fields = [*MLAlgorithmSerializer.Meta.fields, "notes"]
        read_only_fields = fields


def _author(serializer: serializers.Serializer[Any]) -> str:
    """Who is writing: the authenticated user, never a name the body gives."""
    request = serializer.context.get("request")
    user = getattr(request, "user", None)
    return str(user.get_username()) if user and user.is_authenticated else ""


class MLAlgorithmStatusSerializer(serializers.ModelSerializer[MLAlgorithmStatus]):
    class Meta:
        model = MLAlgorithmStatus
        fields = ["id", "status", "active", "created_by", "created_at", "parent_mlalgorithm"]
        read_only_fields = ["id", "active", "created_by", "created_at"]
        # The one-active-status constraint is kept by the service, which deactivates the
        # previous status; DRF's derived uniqueness check would refuse every change.
        validators: list[Any] = []

    def validate_status(self, status: str) -> str:
        if status == MLAlgorithmStatus.Status.SHADOW:
            raise serializers.ValidationError(
                "A version goes into shadow by starting a shadow (POST /api/v1/shadows), "
                "which also says what it is compared with."
            )
        return status

    def create(self, validated_data: dict[str, Any]) -> MLAlgorithmStatus:
        return set_algorithm_status(
            algorithm=validated_data["parent_mlalgorithm"],
            status=validated_data["status"],
            created_by=_author(self),
        )


class MLRequestSerializer(serializers.ModelSerializer[MLRequest]):
    """A logged request, for those who may read it (visible_requests). Feedback
    is given with ``FeedbackSerializer``, never by saving this."""

    user: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username",
        read_only=True,
        allow_null=True,  # null: an anonymous client
    )

    class Meta:
        model = MLRequest
        fields = [
            "id",
            "input_data",
            "full_response",
            "response",
            "feedback",
            "feedback_at",
            "feedback_by",
            "feedback_via",
            "created_at",
            "parent_mlalgorithm",
            "user",
        ]
        read_only_fields = fields


class FeedbackSerializer(serializers.Serializer[Any]):
    """``PUT``/``PATCH /api/v1/mlrequests/<id>``: the ground truth of a logged request."""

    feedback = serializers.CharField(
        max_length=128,
        required=False,
        allow_blank=True,  # refused by feedback.check_value, after the token is checked
        help_text="One of the model's classes (a finite number for a regressor).",
    )
    feedback_token = serializers.CharField(
        max_length=128,
        required=False,
        allow_blank=True,  # as good as none: a 403
        help_text="The feedback_token answered with the prediction. Staff allowed to change "
        "requests may leave it out.",
    )


class FeedbackResultSerializer(serializers.ModelSerializer[MLRequest]):
    """What a feedback write answers: the feedback and its audit, nothing of the request
    itself (a token holder may not be allowed to read the request)."""

    class Meta:
        model = MLRequest
        fields = ["id", "feedback", "feedback_at", "feedback_by", "feedback_via"]
        read_only_fields = fields


class BulkFeedbackSerializer(serializers.Serializer[Any]):
    """``POST /api/v1/feedback`` (multipart): the file, and ``atomic`` (also a query
    parameter)."""

    file = serializers.FileField(
        help_text="CSV with the header request_id,feedback_token,feedback (feedback_token "
        "may be left out by staff allowed to change requests)."
    )
    atomic = serializers.BooleanField(
        default=False, help_text="Refuse the whole file if any row is refused."
    )


class RefusalSerializer(serializers.Serializer[Any]):
    line = serializers.IntegerField()
    request_id = serializers.CharField()
    reason = serializers.CharField()


class BulkFeedbackResultSerializer(serializers.Serializer[Any]):
    applied = serializers.IntegerField(help_text="Rows whose feedback is now the value sent.")
    changed = serializers.IntegerField(help_text="Of those, rows whose feedback changed.")
    refused_count = serializers.IntegerField()
    refused = RefusalSerializer(many=True, help_text="The first 1,000 refused rows.")
    ignored_columns = serializers.ListField(child=serializers.CharField())


class ABTestSerializer(serializers.ModelSerializer[ABTest]):
    """An A/B test. Created by staff (``ab_testing.create``); the decision rule
    (``mode``, ``arm_2_share``, ``alpha``, ``require_significance``, ``planned_feedback``,
    ``auto_stop``) is fixed at creation."""

    report_url = serializers.SerializerMethodField()
    # The model's default is fixed (tests made before sequential ones existed); a new
    # test is sequential unless asked otherwise.
    mode = serializers.ChoiceField(
        choices=ABTest.Mode.choices,
        default=ABTest.Mode.SEQUENTIAL,
        help_text="sequential: confidence sequences, valid at every look (the default); "
        "fixed: the fixed-horizon test, valid at one look.",
    )
    sequence = serializers.SerializerMethodField(
        help_text="A sequential test's confidence sequence: live while it runs, as decided "
        "once it has ended; null for a fixed test."
    )

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
            "mode",
            "planned_feedback",
            "auto_stop",
            "previous_status_1",
            "previous_status_2",
            "summary",
            "summary_json",
            "sequence",
            "report_url",
        ]
        read_only_fields = [
            "id",
            "created_by",
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

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_sequence(self, abtest: ABTest) -> dict[str, Any] | None:
        if abtest.mode != ABTest.Mode.SEQUENTIAL:
            return None
        if abtest.summary_json is not None:  # ended: the numbers it was decided on
            decided: dict[str, Any] | None = abtest.summary_json.get("sequence")
            return decided
        return ab_testing.sequence_summary(abtest)

    def create(self, validated_data: dict[str, Any]) -> ABTest:
        optional = {
            k: validated_data[k]
            for k in (
                "arm_2_share",
                "alpha",
                "require_significance",
                "mode",
                "planned_feedback",
                "auto_stop",
            )
            if k in validated_data
        }
        return ab_testing.create(
            title=validated_data["title"],
            created_by=_author(self),
            parent_mlalgorithm_1=validated_data["parent_mlalgorithm_1"],
            parent_mlalgorithm_2=validated_data["parent_mlalgorithm_2"],
            **optional,
        )


class StopABTestSerializer(serializers.Serializer[Any]):
    # End the test even when an arm has no feedback, restoring both previous statuses.
    force = serializers.BooleanField(default=False)


class ShadowSerializer(serializers.ModelSerializer[Shadow]):
    """A shadow (``shadows/services.py``): its candidate, share, ``alpha`` and
    ``planned_feedback`` fixed at the start; ``comparison`` is live while it runs and as it
    ended after."""

    candidate = serializers.PrimaryKeyRelatedField(queryset=MLAlgorithm.objects.all())
    share = serializers.FloatField(
        default=1.0,
        min_value=0.0,
        max_value=1.0,
        help_text="The share of the serving versions' single predictions copied (0-1].",
    )
    comparison = serializers.SerializerMethodField(
        help_text="Agreement, latency, copies dropped and the paired comparison on the "
        "requests with feedback (docs/shadows.md)."
    )
    report_url = serializers.SerializerMethodField()

    class Meta:
        model = Shadow
        fields = [
            "id",
            "endpoint",
            "candidate",
            "share",
            "alpha",
            "planned_feedback",
            "state",
            "previous_status",
            "baseline",
            "created_by",
            "created_at",
            "ended_at",
            "ended_by",
            "end_reason",
            "ab_test",
            "comparison",
            "report_url",
        ]
        read_only_fields = [
            "id",
            "endpoint",
            "state",
            "previous_status",
            "baseline",
            "created_by",
            "created_at",
            "ended_at",
            "ended_by",
            "end_reason",
            "ab_test",
        ]

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_comparison(self, shadow: Shadow) -> dict[str, Any]:
        # A list shows the counters' numbers; one shadow also its test of the end.
        return comparison.summary(shadow, tests=not self.context.get("many", False))

    def get_report_url(self, shadow: Shadow) -> str:
        path = reverse("shadow-report", args=[shadow.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    def create(self, validated_data: dict[str, Any]) -> Shadow:
        optional = {
            k: validated_data[k]
            for k in ("share", "alpha", "planned_feedback")
            if k in validated_data
        }
        return shadows.create(
            candidate=validated_data["candidate"], created_by=_author(self), **optional
        )


class ShadowABTestSerializer(serializers.Serializer[Any]):
    """An A/B test from a shadow: its candidate against the production version."""

    title = serializers.CharField(max_length=256, required=False, allow_blank=True)
    arm_2_share = serializers.FloatField(required=False)
    alpha = serializers.FloatField(required=False)
    require_significance = serializers.BooleanField(required=False)
    planned_feedback = serializers.IntegerField(required=False, min_value=1)
    auto_stop = serializers.BooleanField(required=False)


class BatchPredictSerializer(serializers.Serializer[Any]):
    """The upload form (multipart); ``endpoint``, ``status``, ``version`` and
    ``log_requests`` may also be given as query parameters."""

    file = serializers.FileField(help_text="CSV with a header row naming the columns.")
    endpoint = serializers.SlugField(max_length=128, required=False)
    status = serializers.ChoiceField(choices=MLAlgorithmStatus.Status.choices, required=False)
    version = serializers.CharField(max_length=128, required=False)
    log_requests = serializers.BooleanField(
        required=False,
        default=True,
        help_text="Log every row as an MLRequest with a feedback token (default). False: "
        "answers only, nothing written; refused with status=ab_testing.",
    )


class BatchJobSerializer(serializers.Serializer[Any]):
    """A batch job's submission form (multipart); ``endpoint``, ``status`` and ``version``
    may also be given as query parameters."""

    file = serializers.FileField(help_text="CSV with a header row naming the columns.")
    endpoint = serializers.SlugField(max_length=128, required=False)
    status = serializers.ChoiceField(choices=MLAlgorithmStatus.Status.choices, required=False)
    version = serializers.CharField(max_length=128, required=False)
    log_requests = serializers.BooleanField(
        required=False, default=False, help_text="Log every row as an MLRequest (feedback)."
    )
    target_column = serializers.CharField(
        max_length=128,
        required=False,
        help_text="The column of true values, scored (default: the algorithm's).",
    )
