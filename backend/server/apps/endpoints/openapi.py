"""What the OpenAPI schema says about routes whose bodies DRF cannot infer.

Predict validates records in the model's own preprocessing (the wrapper knows its
features), not in a serializer, so these serializers exist only to describe the request
and answer shapes in the schema (/api/v1/schema, /api/v1/docs). They are never used to
validate anything.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers

from apps.endpoints.models import MLAlgorithmStatus
from apps.ml.income_classifier import schema as adult


def _record_fields() -> dict[str, serializers.Field]:
    fields: dict[str, serializers.Field] = {}
    for name in adult.FEATURES:
        domain = adult.CATEGORY_DOMAINS.get(name)
        help_text = 'Missing, null, "" or "?": filled with the training mode.'
        if domain:
            fields[name] = serializers.ChoiceField(
                choices=domain, required=False, allow_null=True, help_text=help_text
            )
        else:
            fields[name] = serializers.FloatField(required=False, allow_null=True, help_text=help_text)
    return fields


IncomeRecord = type("IncomeRecord", (serializers.Serializer,), _record_fields())


class AlgorithmRefSchema(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.CharField()


class PredictionSchema(serializers.Serializer):
    probability = serializers.FloatField(help_text="P(income > 50K)")
    label = serializers.ChoiceField(choices=adult.CLASSES)
    status = serializers.CharField(help_text='Always "OK"; failures are errors, not predictions.')
    imputed = serializers.ListField(child=serializers.CharField())
    request_id = serializers.IntegerField(help_text="PUT its feedback to /api/v1/mlrequests/<id>.")
    algorithm = AlgorithmRefSchema()


class ErrorBodySchema(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField(required=False)


class ErrorSchema(serializers.Serializer):
    error = ErrorBodySchema()


class BatchAlgorithmSchema(AlgorithmRefSchema):
    rows = serializers.IntegerField()


class BatchRowSchema(serializers.Serializer):
    request_id = serializers.IntegerField()
    label = serializers.ChoiceField(choices=adult.CLASSES)
    probability = serializers.FloatField()


class BatchResultSchema(serializers.Serializer):
    count = serializers.IntegerField()
    algorithms = BatchAlgorithmSchema(many=True)
    ignored_columns = serializers.ListField(child=serializers.CharField())
    label_column = serializers.CharField(allow_null=True)
    labelled = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)
    predictions = BatchRowSchema(many=True)


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: OpenApiResponse(ErrorSchema) for code in codes}


predict_schema = extend_schema(
    request={"application/json": IncomeRecord, "application/x-www-form-urlencoded": IncomeRecord},
    responses={200: PredictionSchema, **_errors(400, 401, 404, 413, 429, 503)},
    parameters=[
        OpenApiParameter("status", enum=MLAlgorithmStatus.Status.values, required=False,
                         description="Default: PREDICT_DEFAULT_STATUS (production)."),
        OpenApiParameter("version", str, required=False),
        OpenApiParameter("X-Assignment-Key", str, OpenApiParameter.HEADER, required=False,
                         description="Sticky A/B arm: the same key gets the same arm."),
    ],
)

batch_schema = extend_schema(
    responses={
        (200, "application/json"): BatchResultSchema,
        (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="The rows plus request_id, label, probability."),
        **_errors(400, 401, 404, 413, 429, 503),
    },
)
