"""What the OpenAPI schema says about routes whose bodies DRF cannot infer.

Predict validates records in the model's own preprocessing (the wrapper knows its
features), not in a serializer, so these serializers exist only to describe the request
and answer shapes in the schema (/api/v1/schema, /api/v1/docs). They are never used to
validate anything.
"""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers

from apps.endpoints.models import MLAlgorithmStatus
from apps.ml.income_classifier import schema as adult


def _record_fields() -> dict[str, serializers.Field[Any, Any, Any, Any]]:
    fields: dict[str, serializers.Field[Any, Any, Any, Any]] = {}
    for name in adult.FEATURES:
        domain = adult.CATEGORY_DOMAINS.get(name)
        help_text = 'Missing, null, "" or "?": filled with the training mode.'
        if domain:
            fields[name] = serializers.ChoiceField(
                choices=domain, required=False, allow_null=True, help_text=help_text
            )
        else:
            fields[name] = serializers.FloatField(
                required=False, allow_null=True, help_text=help_text
            )
    return fields


IncomeRecord = type("IncomeRecord", (serializers.Serializer,), _record_fields())


class AlgorithmRefSchema(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.CharField()


class PredictionSchema(serializers.Serializer[Any]):
    probability = serializers.FloatField(help_text="P(income > 50K)")
    # DRF's metaclass pops declared fields; the stub sees this one shadow Field.label.
    label = serializers.ChoiceField(choices=adult.CLASSES)  # type: ignore[assignment]
    status = serializers.CharField(help_text='Always "OK"; failures are errors, not predictions.')
    imputed = serializers.ListField(child=serializers.CharField())
    request_id = serializers.IntegerField(help_text="PUT its feedback to /api/v1/mlrequests/<id>.")
    feedback_token = serializers.CharField(
        help_text="Send it with the feedback: it proves the right to give this request's."
    )
    algorithm = AlgorithmRefSchema()


class ErrorBodySchema(serializers.Serializer[Any]):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField(required=False)


class ErrorSchema(serializers.Serializer[Any]):
    error = ErrorBodySchema()


class BatchAlgorithmSchema(AlgorithmRefSchema):
    rows = serializers.IntegerField()


class BatchRowSchema(serializers.Serializer[Any]):
    request_id = serializers.IntegerField()
    # DRF's metaclass pops declared fields; the stub sees this one shadow Field.label.
    label = serializers.ChoiceField(choices=adult.CLASSES)  # type: ignore[assignment]
    probability = serializers.FloatField()
    feedback_token = serializers.CharField()


class BatchResultSchema(serializers.Serializer[Any]):
    count = serializers.IntegerField()
    algorithms = BatchAlgorithmSchema(many=True)
    ignored_columns = serializers.ListField(child=serializers.CharField())
    label_column = serializers.CharField(allow_null=True)
    labelled = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)
    predictions = BatchRowSchema(many=True)


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: OpenApiResponse(ErrorSchema) for code in codes}


def _json_errors(*codes: int) -> dict[tuple[int, str], OpenApiResponse]:
    # For views that can also render CSV: their errors are JSON all the same.
    return {(code, "application/json"): OpenApiResponse(ErrorSchema) for code in codes}


predict_schema = extend_schema(
    request={"application/json": IncomeRecord, "application/x-www-form-urlencoded": IncomeRecord},
    responses={200: PredictionSchema, **_errors(400, 401, 404, 413, 429, 503)},
    parameters=[
        OpenApiParameter(
            "status",
            enum=MLAlgorithmStatus.Status.values,
            required=False,
            description="Default: PREDICT_DEFAULT_STATUS (production).",
        ),
        OpenApiParameter("version", str, required=False),
        OpenApiParameter(
            "X-Assignment-Key",
            str,
            OpenApiParameter.HEADER,
            required=False,
            description="Sticky A/B arm: the same key gets the same arm.",
        ),
    ],
)

bulk_feedback_schema = extend_schema(
    parameters=[
        OpenApiParameter(
            "atomic", bool, required=False, description="Refuse the whole file if any row is."
        )
    ],
)

batch_schema = extend_schema(
    responses={
        (200, "application/json"): BatchResultSchema,
        (200, "text/csv"): OpenApiResponse(
            OpenApiTypes.STR,
            description="The rows plus request_id, label, probability, feedback_token.",
        ),
        **_json_errors(400, 401, 404, 413, 429, 503),
    },
)


# -- The errors every operation can answer -----------------------------------------------
# Views document their own successes (and errors peculiar to them, as predict does); the
# errors that come from the framework around every view are added here, once, by
# ``add_error_responses`` (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]). The fuzzer
# (.ci/fuzz) checks each answer against this list.

ERROR_DESCRIPTIONS = {
    400: "The request is not valid; error.details names the fields.",
    401: "No valid credentials: send 'Authorization: Token <key>' (WWW-Authenticate says so).",
    403: "Not allowed: a change needs staff with its model permission; feedback needs the "
    "request's feedback_token; a session needs its CSRF token.",
    404: "Not found: an unknown id or name, a page past the end, or an unknown ?format=.",
    406: "The Accept header (or ?format=) asks for a format this route does not produce.",
    409: "The request conflicts with the current state (e.g. the A/B test has ended).",
    413: "The body is larger than MAX_BODY_BYTES (uploads: BATCH_MAX_UPLOAD_BYTES).",
    415: "The Content-Type is not one this route accepts.",
    429: (
        "Over this client's rate (PREDICT_THROTTLE_RATE, MANAGEMENT_THROTTLE_RATE);"
        " see Retry-After."
    ),
    503: "The database or the model is unavailable; try again.",
}
# Any route: authentication (a bad token is a 401 even where reading is open), content
# negotiation (404, 406), a database outage (503).
ANY_ROUTE_ERRORS = (401, 404, 406, 503)
# Refused by gunicorn (its default limits) before Django sees the request, so in gunicorn's
# shape: an HTML page, not the JSON error shape.
GUNICORN_ERRORS = {
    414: "The request line (path and query) is over 4094 bytes; an HTML page from gunicorn.",
    431: "A header is over 8190 bytes, or there are over 100; an HTML page from gunicorn.",
}
# Routes with a body: validation, permissions and CSRF, size, media type.
WRITE_ERRORS = (400, 403, 413, 415)
_WRITE_METHODS = {"post", "put", "patch", "delete"}
ERROR_SCHEMA_REF = "#/components/schemas/ErrorSchema"


def _template(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def add_error_responses(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: document, on every operation, the error answers
    (in the one ``ErrorSchema`` shape) that the framework gives around the view:
    ``ANY_ROUTE_ERRORS``, ``WRITE_ERRORS`` for methods with a body, 429 on throttled views
    (those with a ``throttle_scope``) and a view's own ``openapi_error_codes``; and
    ``GUNICORN_ERRORS``. What a view documents itself is kept."""
    views = {
        (_template(path), method.lower()): getattr(callback, "cls", None)
        for path, _regex, method, callback in generator.endpoints or ()
    }
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            view = views.get((_template(path), method))
            codes = set(ANY_ROUTE_ERRORS)
            if method in _WRITE_METHODS:
                codes.update(WRITE_ERRORS)
            if getattr(view, "throttle_scope", None):
                codes.add(429)
            codes.update(getattr(view, "openapi_error_codes", ()))
            responses = operation.setdefault("responses", {})
            for code in sorted(codes):
                responses.setdefault(
                    str(code),
                    {
                        "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}},
                        "description": ERROR_DESCRIPTIONS[code],
                    },
                )
            for code, description in GUNICORN_ERRORS.items():
                responses.setdefault(
                    str(code),
                    {
                        "content": {"text/html": {"schema": {"type": "string"}}},
                        "description": description,
                    },
                )
            for code, response in responses.items():  # what views documented without one
                if int(code) >= 400 and not response.get("description"):
                    response["description"] = ERROR_DESCRIPTIONS.get(int(code), "")
            operation["responses"] = dict(sorted(responses.items()))
    # What a serializer cannot say: a record names only known features, and at least one
    # (an unknown feature, or an empty body, is a 400).
    record = result.get("components", {}).get("schemas", {}).get("IncomeRecordRequest")
    if record is not None:
        record.update(additionalProperties=False, minProperties=1)
    return result
