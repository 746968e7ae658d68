"""What the OpenAPI schema says about routes whose bodies DRF cannot infer.

Predict checks records against the model's signature (``apps/ml/codecs.py``), not a
serializer, so the serializers here exist only to describe shapes in the schema
(/api/v1/schema, /api/v1/docs); they never validate anything. Each endpoint gets a path of
its own, ``/api/v1/<name>/predict``, whose body and answer come from its serving model's
signature (``add_endpoint_paths``): its features with their types, which are required, the
allowed categories, an example record, and its answer's fields.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    F,
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers

from apps.endpoints.catalogue.selectors import algorithms_with_current_status, current_status
from apps.endpoints.models import MLAlgorithm, MLAlgorithmStatus
from apps.ml.answer import Answer
from apps.ml.registry import signature_of


class AlgorithmRefSchema(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.CharField()


# The version that answered a single prediction (serving/predict.py, AlgorithmRef).
ALGORITHM_REF: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "version": {"type": "string"},
    },
    "required": ["id", "name", "version"],
}


def served_schema(answer: Answer) -> dict[str, Any]:
    """A single prediction's answer: the model's (``Answer.json_schema``, the envelope
    included) and the version that answered."""
    schema = answer.json_schema()
    schema["properties"]["algorithm"] = ALGORITHM_REF
    schema["required"].append("algorithm")
    return schema


@extend_schema_field(Answer.any_model().row_schema())
class BatchRowField(serializers.DictField):
    """A row of a batch's JSON answer: its ``Answer.row_schema``."""


class ErrorBodySchema(serializers.Serializer[Any]):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField(required=False)


class ErrorSchema(serializers.Serializer[Any]):
    error = ErrorBodySchema()


class V2ErrorSchema(serializers.Serializer[Any]):
    """The Open Inference Protocol's error shape (views/oip.py)."""

    error = serializers.CharField()


class BatchAlgorithmSchema(AlgorithmRefSchema):
    rows = serializers.IntegerField()


class BatchResultSchema(serializers.Serializer[Any]):
    count = serializers.IntegerField()
    logged = serializers.BooleanField(
        help_text="Whether the rows were logged (log_requests): each prediction then has its "
        "request_id and feedback_token."
    )
    algorithms = BatchAlgorithmSchema(many=True)
    ignored_columns = serializers.ListField(child=serializers.CharField())
    label_column = serializers.CharField(allow_null=True)
    labels_recorded = serializers.BooleanField(
        help_text="Whether the label column became the rows' feedback (FEEDBACK_ACCESS)."
    )
    labels_note = serializers.CharField(
        allow_null=True, help_text="Why the label column was not recorded as feedback."
    )
    labelled = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True, help_text="Classifiers, with labels.")
    metrics = serializers.DictField(
        child=serializers.FloatField(allow_null=True),
        help_text="Regressors, with true values: mae, rmse, r2.",
    )
    predictions = serializers.ListField(child=BatchRowField())


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: OpenApiResponse(ErrorSchema) for code in codes}


def _json_errors(*codes: int) -> dict[tuple[int, str], OpenApiResponse]:
    # For views that can also render CSV: their errors are JSON all the same.
    return {(code, "application/json"): OpenApiResponse(ErrorSchema) for code in codes}


RECORD = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": True,
    "description": "One record: the endpoint's features and their values. Each endpoint's "
    "own path below lists them.",
}

# Which version answers: every route a client waits on for predictions takes these.
SERVING_PARAMETERS = [
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
]

predict_schema = extend_schema(
    request={"application/json": RECORD, "application/x-www-form-urlencoded": RECORD},
    responses={
        200: served_schema(Answer.any_model()),
        **_errors(400, 401, 404, 413, 429, 503),
    },
    parameters=SERVING_PARAMETERS,
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
            description="The rows plus request_id, the answer's columns (label and probability "
            "or probability_<class>, or prediction) and feedback_token; without request_id "
            "and feedback_token when log_requests is false.",
        ),
        **_json_errors(400, 401, 404, 413, 429, 503),
    },
)


class BatchJobAlgorithmSchema(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.CharField()


class BatchJobSchema(serializers.Serializer[Any]):
    """A batch job as ``/api/v1/batch-jobs`` answers it (``jobs.progress``)."""

    id = serializers.IntegerField()
    state = serializers.ChoiceField(
        choices=["queued", "running", "succeeded", "failed", "cancelled"]
    )
    endpoint = serializers.CharField()
    status = serializers.CharField()
    algorithms = BatchJobAlgorithmSchema(many=True)
    log_requests = serializers.BooleanField()
    target_column = serializers.CharField(allow_null=True)
    labels_recorded = serializers.BooleanField(
        help_text="Whether the target column becomes the logged rows' feedback "
        "(log_requests, and its submitter may give feedback: FEEDBACK_ACCESS)."
    )
    file_name = serializers.CharField()
    rows_total = serializers.IntegerField()
    rows_done = serializers.IntegerField()
    percent = serializers.FloatField()
    chunks_total = serializers.IntegerField()
    chunks_done = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    rows_per_second = serializers.FloatField(allow_null=True)
    metrics = serializers.DictField(allow_null=True, help_text="With a label column.")
    error = serializers.DictField(
        allow_null=True, help_text="On failure: code, message, and line and column of a bad cell."
    )
    url = serializers.URLField()
    result_url = serializers.URLField(required=False, help_text="Once it has succeeded.")
    token = serializers.CharField(
        required=False,
        help_text="Anonymous submitters: send it back as X-Job-Token (in the URL: a 400).",
    )


JOB_TOKEN = OpenApiParameter(
    "X-Job-Token",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="The token an anonymous submitter got with the job. Only this header: a "
    "?token= in the URL is refused (400), since URLs are written to access logs.",
)
job_schema = extend_schema(
    parameters=[JOB_TOKEN], responses={200: BatchJobSchema}, operation_id="batch_job_retrieve"
)
job_cancel_schema = extend_schema(
    request=None,
    parameters=[JOB_TOKEN],
    responses={200: BatchJobSchema},
    operation_id="batch_job_cancel",
)
job_result_schema = extend_schema(
    parameters=[JOB_TOKEN],
    responses={
        (200, "text/csv"): OpenApiResponse(
            OpenApiTypes.STR,
            description="The uploaded rows plus the answer columns (with log_requests, "
            "request_id and feedback_token too).",
        ),
        **_json_errors(401, 404, 409, 503),
    },
    operation_id="batch_job_result",
)
job_submit_schema = extend_schema(responses={202: BatchJobSchema}, operation_id="batch_job_submit")
job_list_schema = extend_schema(
    parameters=[
        OpenApiParameter(
            "state",
            OpenApiTypes.STR,
            enum=["queued", "running", "succeeded", "failed", "cancelled"],
            required=False,
        )
    ],
    responses={200: BatchJobSchema(many=True)},
    operation_id="batch_job_list",
)


# -- MLflow's scoring format (api/mlflow.py, views/mlflow.py) -----------------------------

_ANY: dict[str, Any] = {}  # a JSON value of any type
MLFLOW_REQUEST: dict[str, Any] = {
    "type": "object",
    "description": "Exactly one of dataframe_split, dataframe_records, instances and inputs, "
    "as mlflow models serve takes them, and optionally params. The features are the "
    "endpoint's: its predict path in this schema lists them.",
    "properties": {
        "dataframe_split": {
            "type": "object",
            "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "data": {"type": "array", "items": {"type": "array", "items": _ANY}},
                "index": {"type": "array", "items": _ANY, "description": "Ignored."},
            },
            "required": ["columns", "data"],
            "additionalProperties": False,
        },
        "dataframe_records": {
            "type": "array",
            "items": {"type": "object", "additionalProperties": True},
            "minItems": 1,
        },
        "instances": {
            "type": "array",
            "items": _ANY,
            "minItems": 1,
            "description": "Records; or, for a model of one feature, its values.",
        },
        "inputs": {
            "description": "A list of values per feature; one record; or a list as instances.",
            "oneOf": [
                {"type": "object", "additionalProperties": True},
                {"type": "array", "items": _ANY, "minItems": 1},
            ],
        },
        "params": {
            "type": "object",
            "properties": {
                "probabilities": {
                    "type": "boolean",
                    "description": "Classifiers: list each record's class probabilities too.",
                }
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 2,
}
MLFLOW_ANSWER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "predictions": {
            "type": "array",
            "items": {"oneOf": [{"type": "string"}, {"type": "number"}]},
            "description": "Per record, in order: a classifier's label, a regressor's number.",
        },
        "probabilities": {
            "type": "array",
            "items": {"type": "object", "additionalProperties": {"type": "number"}},
            "description": "When asked (?probabilities=true or params.probabilities): per "
            "record, every class's probability.",
        },
        "request_ids": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "Per record, where it is logged (GET/PUT /api/v1/mlrequests/<id>).",
        },
        "feedback_tokens": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Per record, the token its feedback is sent with.",
        },
    },
    "required": ["predictions", "request_ids", "feedback_tokens"],
}
_COLUMNS = ["alcohol", "malic_acid", "color_intensity"]
_ROWS = [[13.2, 1.78, 4.38], [12.37, 0.94, 1.95]]
_RECORDS = [dict(zip(_COLUMNS, row, strict=True)) for row in _ROWS]
MLFLOW_EXAMPLES = [
    OpenApiExample(
        "dataframe_split",
        value={"dataframe_split": {"columns": _COLUMNS, "data": _ROWS}},
        request_only=True,
        media_type="application/json",
    ),
    OpenApiExample(
        "dataframe_records",
        value={"dataframe_records": _RECORDS},
        request_only=True,
        media_type="application/json",
    ),
    OpenApiExample(
        "instances",
        value={"instances": _RECORDS},
        request_only=True,
        media_type="application/json",
    ),
    OpenApiExample(
        "inputs",
        value={"inputs": {c: [row[j] for row in _ROWS] for j, c in enumerate(_COLUMNS)}},
        request_only=True,
        media_type="application/json",
    ),
    OpenApiExample(
        "probabilities",
        value={"dataframe_records": _RECORDS[:1], "params": {"probabilities": True}},
        request_only=True,
        media_type="application/json",
    ),
    OpenApiExample(
        "CSV",
        value="\n".join([",".join(_COLUMNS), *(",".join(map(str, row)) for row in _ROWS)]),
        request_only=True,
        media_type="text/csv",
    ),
]
_PROBABILITIES = OpenApiParameter(
    "probabilities",
    bool,
    required=False,
    description="Classifiers: list each record's class probabilities beside the predictions "
    "(as params.probabilities in a JSON body; a CSV body has no params).",
)


def mlflow_schema(*, operation_id: str, description: str) -> Callable[[F], F]:
    """The OpenAPI of an ``/invocations`` route (``views/mlflow.py``)."""
    return extend_schema(
        operation_id=operation_id,
        tags=["mlflow"],
        summary="Predict in MLflow's scoring format",
        description=description,
        request={"application/json": MLFLOW_REQUEST, "text/csv": OpenApiTypes.STR},
        examples=MLFLOW_EXAMPLES,
        responses={200: MLFLOW_ANSWER, **_errors(400, 401, 404, 413, 415, 429, 503)},
        parameters=[*SERVING_PARAMETERS, _PROBABILITIES],
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
        "Over this client's rate (PREDICT_THROTTLE_RATE, MANAGEMENT_THROTTLE_RATE; code"
        " throttled), or too many failed logins for this user name or from this address"
        " (LOGIN_FAILURE_LIMIT; code locked_out); see Retry-After."
    ),
    503: "The database or the model is unavailable; try again.",
}
# Any route: authentication (a bad token is a 401 even where reading is open; a locked
# out login, 429), content negotiation (404, 406), a database outage (503).
ANY_ROUTE_ERRORS = (401, 404, 406, 429, 503)
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
    ``ANY_ROUTE_ERRORS`` (429 among them: a locked-out login anywhere, a rate on views with
    a ``throttle_scope``), ``WRITE_ERRORS`` for methods with a body and a view's own
    ``openapi_error_codes``; and ``GUNICORN_ERRORS``. What a view documents itself is
    kept."""
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
            codes.update(getattr(view, "openapi_error_codes", ()))
            # A view that answers errors in another shape (a wire protocol's) names it.
            schema_ref = getattr(view, "openapi_error_schema", ERROR_SCHEMA_REF)
            responses = operation.setdefault("responses", {})
            for code in sorted(codes):
                responses.setdefault(
                    str(code),
                    {
                        "content": {"application/json": {"schema": {"$ref": schema_ref}}},
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
    return result


# -- One path per endpoint ---------------------------------------------------------------

PREDICT_TEMPLATE = "/api/v1/{endpoint_name}/predict"


def add_endpoint_paths(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: beside the templated predict path, one path per
    endpoint, its body and answer from the signature of the model that serves it (the
    production one, else the newest with a status). Generated from the catalogue at each
    schema request: an endpoint registered a moment ago is in it."""
    template = result.get("paths", {}).get(PREDICT_TEMPLATE, {}).get("post")
    if template is None:
        return result
    try:
        serving = _serving_algorithms()
    except DatabaseError:  # no catalogue (yet): the templated path still documents predict
        return result
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    for endpoint, algorithm in sorted(serving.items()):
        operation = copy.deepcopy(template)
        operation["operationId"] = f"predict_{endpoint}"
        operation["summary"] = f"Predict with {endpoint}"
        operation["description"] = (
            f"A {algorithm.task} model ({algorithm.name} {algorithm.version}). "
            + operation.get("description", "")
        )
        operation["parameters"] = [
            p for p in operation.get("parameters", []) if p.get("name") != "endpoint_name"
        ]
        record, answer = f"{endpoint}.Record", f"{endpoint}.Prediction"
        schemas[record] = record_schema(algorithm)
        schemas[answer] = served_schema(Answer(signature_of(algorithm)))
        for content in operation["requestBody"]["content"].values():
            content["schema"] = {"$ref": f"#/components/schemas/{record}"}
        if algorithm.example:
            operation["requestBody"]["content"]["application/json"]["example"] = dict(
                algorithm.example[0]
            )
        operation["responses"]["200"]["content"]["application/json"]["schema"] = {
            "$ref": f"#/components/schemas/{answer}"
        }
        result["paths"][f"/api/v1/{endpoint}/predict"] = {"post": operation}
    return result


def _serving_algorithms() -> dict[str, MLAlgorithm]:
    """Per endpoint, the algorithm whose signature its path shows."""
    chosen: dict[str, MLAlgorithm] = {}
    rank: dict[str, int] = {}
    for algorithm in algorithms_with_current_status().order_by("-id"):
        status = current_status(algorithm)
        if status is None:
            continue
        name = algorithm.parent_endpoint.name
        order = 0 if status.status == MLAlgorithmStatus.Status.PRODUCTION else 1
        if name not in chosen or order < rank[name]:
            chosen[name], rank[name] = algorithm, order
    return chosen


def record_schema(algorithm: MLAlgorithm) -> dict[str, Any]:
    """The JSON schema of one record for ``algorithm``'s signature."""
    properties = {}
    required = []
    for feature in algorithm.features:
        prop = _feature_schema(feature)
        if feature.get("required", False):
            required.append(feature["name"])
        else:
            prop["nullable"] = True
        properties[feature["name"]] = prop
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,  # an unknown feature is a 400
        "minProperties": 1,
    }
    if required:
        out["required"] = required
    return out


def _feature_schema(feature: dict[str, Any]) -> dict[str, Any]:
    kind = feature.get("type", "number")
    categories = feature.get("categories")
    if kind == "category" and categories:
        numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in categories)
        if feature.get("unknown", "error") == "error":
            return {"type": "number" if numeric else "string", "enum": list(categories)}
        return {
            "type": "number" if numeric else "string",
            "description": f"Known values: {', '.join(map(str, categories[:40]))}",
        }
    return {"type": {"number": "number", "boolean": "boolean"}.get(kind, "string")}


# The request log's filters (filter_requests), each index-backed.
request_log_schema = extend_schema(
    parameters=[
        OpenApiParameter("algorithm", int, description="The algorithm's id."),
        OpenApiParameter("endpoint", str, description="The endpoint's name."),
        OpenApiParameter("status", str, description="The algorithms whose current status this is."),
        OpenApiParameter("ab_test", int, description="Requests routed by this A/B test."),
        OpenApiParameter("has_feedback", bool),
        OpenApiParameter(
            "created_after", OpenApiTypes.DATETIME, description="Inclusive; a date or a time."
        ),
        OpenApiParameter("created_before", OpenApiTypes.DATETIME, description="Exclusive."),
    ]
)
