"""``POST /api/v1/<endpoint_name>/predict``: one record in, its prediction out
(``serving/predict.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.http import QueryDict
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.errors import InvalidInput, ServiceError
from apps.endpoints import policy
from apps.endpoints.api import openapi
from apps.endpoints.api.inputs import assignment_key, short
from apps.endpoints.api.renderers import ExampleFormRenderer
from apps.endpoints.catalogue.selectors import algorithms_for_prediction, check_endpoint
from apps.endpoints.serving.predict import predict


class PredictView(policy.PredictAccessMixin, APIView):
    """``POST /api/v1/<endpoint_name>/predict?status=&version=`` with one record as a JSON
    object (or form fields). Answers the prediction and the ``request_id`` it is logged as."""

    permission_classes = [policy.PredictAccess]
    throttle_scope = "predict"
    renderer_classes = [JSONRenderer, ExampleFormRenderer]

    def form_example(self) -> dict[str, Any] | None:
        """The first example record of the model that would answer, for the browsable
        API's form; None when no model would (the page then says why on POST)."""
        params = self.request.query_params
        try:
            algorithms = algorithms_for_prediction(
                endpoint_name=self.kwargs["endpoint_name"],
                status=params.get("status") or settings.PREDICT_DEFAULT_STATUS,
                version=params.get("version"),
            )
        except ServiceError:
            return None
        examples = algorithms[0].example if algorithms else None
        return dict(examples[0]) if examples and isinstance(examples[0], dict) else None

    @openapi.predict_schema
    def post(self, request: Request, endpoint_name: str) -> Response:
        params = request.query_params
        record = _record(request.data)
        if not record:  # a 404 for an unknown endpoint comes first, whatever the body
            check_endpoint(endpoint_name)
            # Refused even where every feature may be missing (the Adult models fill
            # them in): an answer made of nothing but defaults is a client's mistake.
            raise InvalidInput("The body is empty; send the record's features as a JSON object.")
        [prediction] = predict(
            endpoint_name=endpoint_name,
            records=[record],
            status=params.get("status") or settings.PREDICT_DEFAULT_STATUS,  # checked there
            version=short("version", params.get("version"), 128),
            assignment_key=assignment_key(request),
            user_id=policy.Actor.of(request).user_id,
        )
        return Response(prediction)


def _record(data: Any) -> dict[str, Any]:
    if isinstance(data, QueryDict):  # form-encoded: one value per field
        data = data.dict()
    if not isinstance(data, Mapping):
        raise InvalidInput("The body must be one JSON object of feature names and values.")
    return dict(data)
