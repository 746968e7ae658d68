"""Reads of the catalogue: endpoints, versions and their statuses, and which versions serve
a request."""

from __future__ import annotations

from django.conf import settings
from django.db.models import OuterRef, Prefetch, QuerySet, Subquery

from apps.core.errors import AlgorithmNotFound, EndpointNotFound, InvalidInput
from apps.core.per_process import Remembered
from apps.endpoints.models import DriftReference, Endpoint, MLAlgorithm, MLAlgorithmStatus


def algorithms_with_current_status() -> QuerySet[MLAlgorithm]:
    """Algorithms with their active status prefetched as ``active_statuses`` (0 or 1 row)
    and their drift reference as ``current_references`` (0 or 1, without its profile), so
    a list costs three queries whatever its length."""
    active = MLAlgorithmStatus.objects.filter(active=True)
    references = DriftReference.objects.filter(replaced_at__isnull=True).defer("profile")
    return MLAlgorithm.objects.select_related("parent_endpoint").prefetch_related(
        Prefetch("statuses", queryset=active, to_attr="active_statuses"),
        Prefetch("drift_references", queryset=references, to_attr="current_references"),
    )


def current_status(algorithm: MLAlgorithm) -> MLAlgorithmStatus | None:
    prefetched = getattr(algorithm, "active_statuses", None)
    if prefetched is not None:
        return prefetched[0] if prefetched else None
    return algorithm.statuses.filter(active=True).first()


# (endpoint, status, version) -> its algorithms
_selections: Remembered[tuple[str, str, str | None], list[MLAlgorithm]] = Remembered()


def algorithms_for_prediction(
    *, endpoint_name: str, status: str, version: str | None = None
) -> list[MLAlgorithm]:
    """The algorithms of ``endpoint_name`` whose active status is ``status``; raises a 404
    error that says which part did not match.

    Remembered for ``PREDICT_CACHE_SECONDS`` per process: building and running this query
    cost more than the compiled model itself. A status change made in this process clears
    the cache at once (``forget_selections``); other workers see it within the TTL."""
    return _selections.get(
        (endpoint_name, status, version),
        settings.PREDICT_CACHE_SECONDS,
        lambda: _algorithms_for_prediction(
            endpoint_name=endpoint_name, status=status, version=version
        ),
    )


def forget_selections() -> None:
    _selections.forget()


def _algorithms_for_prediction(
    *, endpoint_name: str, status: str, version: str | None
) -> list[MLAlgorithm]:
    # Each with its current drift reference's id, for the drift window of the requests it
    # will score (monitoring/references.py): known with the selection, not asked per request.
    reference = DriftReference.objects.filter(algorithm=OuterRef("pk"), replaced_at__isnull=True)
    candidates = MLAlgorithm.objects.filter(
        parent_endpoint__name=endpoint_name, statuses__status=status, statuses__active=True
    ).annotate(drift_reference_id=Subquery(reference.values("pk")[:1]))
    if version is not None:
        candidates = candidates.filter(version=version)
    found: list[MLAlgorithm] = list(candidates.order_by("id"))
    if found:
        return found
    check_endpoint(endpoint_name)
    wanted = f"status '{status}'" + (f" and version '{version}'" if version is not None else "")
    raise AlgorithmNotFound(f"Endpoint '{endpoint_name}' has no algorithm with {wanted}.")


def check_endpoint(endpoint_name: str) -> None:
    """Raise ``EndpointNotFound`` unless an endpoint of this name exists."""
    if not Endpoint.objects.filter(name=endpoint_name).exists():
        raise EndpointNotFound(f"No endpoint named '{endpoint_name}'.")


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


def endpoint_names(*, limit: int) -> list[str]:
    """The endpoints' names in order, at most ``limit`` of them."""
    return list(Endpoint.objects.order_by("name").values_list("name", flat=True)[:limit])


def find_algorithm(*, endpoint_name: str, name: str, version: str) -> MLAlgorithm | None:
    return MLAlgorithm.objects.filter(
        parent_endpoint__name=endpoint_name, name=name, version=version
    ).first()
