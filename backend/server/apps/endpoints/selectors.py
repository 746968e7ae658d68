"""Reads: the queries the API and the services share."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from apps.endpoints.errors import AlgorithmNotFound, EndpointNotFound, InvalidInput
from apps.endpoints.models import Endpoint, MLAlgorithm, MLAlgorithmStatus


def algorithms_with_current_status() -> QuerySet[MLAlgorithm]:
    """Algorithms with their active status prefetched as ``active_statuses`` (0 or 1 row),
    so a list costs two queries whatever its length."""
    active = MLAlgorithmStatus.objects.filter(active=True)
    return MLAlgorithm.objects.select_related("parent_endpoint").prefetch_related(
        Prefetch("statuses", queryset=active, to_attr="active_statuses")
    )


def current_status(algorithm: MLAlgorithm) -> MLAlgorithmStatus | None:
    prefetched = getattr(algorithm, "active_statuses", None)
    if prefetched is not None:
        return prefetched[0] if prefetched else None
    return algorithm.statuses.filter(active=True).first()


def algorithms_for_prediction(
    *, endpoint_name: str, status: str, version: str | None = None
) -> list[MLAlgorithm]:
    """The algorithms of ``endpoint_name`` whose active status is ``status`` (one query when
    there are some); raises a 404 error that says which part did not match."""
    candidates = MLAlgorithm.objects.filter(
        parent_endpoint__name=endpoint_name, statuses__status=status, statuses__active=True
    )
    if version is not None:
        candidates = candidates.filter(version=version)
    found = list(candidates.order_by("id"))
    if found:
        return found
    if not Endpoint.objects.filter(name=endpoint_name).exists():
        raise EndpointNotFound(f"No endpoint named '{endpoint_name}'.")
    wanted = f"status '{status}'" + (f" and version '{version}'" if version is not None else "")
    raise AlgorithmNotFound(f"Endpoint '{endpoint_name}' has no algorithm with {wanted}.")


def sole_endpoint_name() -> str:
    """The name of the only endpoint, for clients that leave ``endpoint`` out."""
    names = list(Endpoint.objects.values_list("name", flat=True)[:2])
    if len(names) == 1:
        return names[0]
    if not names:
        raise EndpointNotFound("There are no endpoints yet.")
    raise InvalidInput(
        "There is more than one endpoint; name one.",
        details={"endpoint": ["Required when more than one endpoint exists."]},
    )
