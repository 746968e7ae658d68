"""The service's error hierarchy.

Services, selectors, the registry and the classifier wrappers raise these; one DRF
exception handler (``apps/endpoints/api/errors.py``) turns every one of them, and every error DRF
raises itself, into the same JSON shape::

    {"error": {"code": "invalid_input", "message": "...", "details": {...}}}

Plain Python on purpose: the ML layer can raise them without importing Django.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ServiceError(Exception):
    """Base class. Subclasses set the HTTP status and a stable machine-readable code."""

    status_code: int = 500
    code: str = "server_error"
    default_message: str = "The server failed to handle the request."

    def __init__(self, message: str | None = None, *, details: Any = None) -> None:
        self.message = message or self.default_message
        self.details = details
        super().__init__(self.message)


class BadRequest(ServiceError):
    """A request refused before any view saw it (Django's own 400s, e.g. a bad Host)."""

    status_code = 400
    code = "bad_request"
    default_message = "The request was refused."


class Forbidden(ServiceError):
    status_code = 403
    code = "permission_denied"
    default_message = "You do not have permission to do this."


class InvalidInput(ServiceError):
    """The request is well-formed but its content is not acceptable (a field names what)."""

    status_code = 400
    code = "invalid_input"
    default_message = "The input is not valid."


class AmbiguousAlgorithm(ServiceError):
    status_code = 400
    code = "ambiguous_algorithm"
    default_message = "More than one algorithm matches; pass a version."


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"
    default_message = "Not found."


class EndpointNotFound(NotFound):
    code = "endpoint_not_found"


class AlgorithmNotFound(NotFound):
    code = "algorithm_not_found"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"
    default_message = "The request conflicts with the current state."


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "too_large"
    default_message = "The request is larger than this service accepts."


class TooManyJobs(ServiceError):
    """A client already has as many batch jobs (or rows) queued or running as it may."""

    status_code = 429
    code = "too_many_jobs"
    default_message = "You have as many batch jobs queued or running as you may."


class ABTestStopped(Conflict):
    code = "ab_test_stopped"
    default_message = "This A/B test has already ended."


class ShadowEnded(Conflict):
    code = "shadow_ended"
    default_message = "This shadow has already ended."


class NotEnoughData(Conflict):
    """An arm has no request with feedback: nothing to compare (``force`` ends it anyway)."""

    code = "not_enough_data"
    default_message = "An arm of this A/B test has no feedback yet."


class ModelUnavailable(ServiceError):
    """The algorithm exists but cannot serve in this process (artifact missing or tampered)."""

    status_code = 503
    code = "model_unavailable"
    default_message = "The model is not available right now."


class ModelRejected(InvalidInput):
    """A model file that cannot be registered as it is (400): it does not load, is not a
    model, needs types the operator does not trust, or fails on its own example."""

    code = "model_rejected"
    default_message = "The model cannot be served."


class UntrustedTypes(ModelRejected):
    """A ``.skops`` file holds types the operator's trust list does not name."""

    code = "untrusted_types"

    def __init__(self, types: Sequence[str]) -> None:
        self.types = list(types)
        super().__init__(
            f"The file holds types that are not trusted: {', '.join(self.types)}. An "
            "operator who has reviewed them can add them to SKOPS_TRUSTED_TYPES.",
            details={"untrusted_types": self.types},
        )


class ModelFailed(InvalidInput):
    """The estimator raised on valid-looking input (a value its pipeline cannot take): the
    client's input, so a 400 with the estimator's message, clipped; never a traceback."""

    code = "invalid_input"


class PieceRefused(ServiceError):
    """A batch job's piece whose content is refused (a bad cell, a value the model cannot
    take): trying again would give the same answer, so the job fails at once."""

    status_code = 400
    code = "invalid_input"
