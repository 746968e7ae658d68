"""The catalogue's status writes: a version's active status, and the history it leaves.

Every status write goes through ``set_algorithm_status``, so this is also where a running
shadow learns that the versions it is compared with changed (``_end_shadow``)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from apps.core.errors import InvalidInput
from apps.endpoints.catalogue.selectors import forget_selections
from apps.endpoints.models import Endpoint, MLAlgorithm, MLAlgorithmStatus, Shadow

Status = MLAlgorithmStatus.Status
# The statuses that answer an endpoint's clients: a shadow is compared with these.
SERVING = frozenset({Status.PRODUCTION, Status.AB_TESTING})


def check_status(status: str) -> None:
    """``InvalidInput`` unless ``status`` is one of the statuses."""
    if status not in Status.values:
        raise InvalidInput(
            f"'{status}' is not a status.",
            details={"status": [f"Expected one of: {', '.join(Status.values)}."]},
        )


def status_of(algorithm: MLAlgorithm) -> str:
    """The algorithm's active status, "" when it has none."""
    return (
        MLAlgorithmStatus.objects.filter(parent_mlalgorithm=algorithm, active=True)
        .values_list("status", flat=True)
        .first()
        or ""
    )


@transaction.atomic
def set_algorithm_status(
    *, algorithm: MLAlgorithm, status: str, created_by: str
) -> MLAlgorithmStatus:
    """Make ``status`` the algorithm's active status; the previous one stays as history.

    A write that changes which versions serve the endpoint (into or out of ``production``
    or ``ab_testing``) ends its running shadow, if any: the shadow was being compared with
    the versions that served, and a comparison across the change would mix two baselines.
    So does a write that takes the candidate out of ``shadow`` behind the shadow's back."""
    check_status(status)
    _lock(algorithm)
    old = status_of(algorithm)
    MLAlgorithmStatus.objects.filter(parent_mlalgorithm=algorithm, active=True).update(active=False)
    created = MLAlgorithmStatus.objects.create(
        status=status, active=True, created_by=created_by, parent_mlalgorithm=algorithm
    )
    if old != status and (old in SERVING or status in SERVING or old == Status.SHADOW):
        _end_shadow(algorithm, old=old, new=status, by=created_by)
    # Now, and again once committed, so that no request in between caches the old state.
    forget_selections()
    transaction.on_commit(forget_selections)
    return created


def restore_status(*, algorithm: MLAlgorithm, previous: str, by: str) -> None:
    """Give back a status remembered before an A/B test or a shadow ("": none)."""
    if previous:
        set_algorithm_status(algorithm=algorithm, status=previous, created_by=by)
        return
    _lock(algorithm)
    MLAlgorithmStatus.objects.filter(parent_mlalgorithm=algorithm, active=True).update(active=False)
    forget_selections()
    transaction.on_commit(forget_selections)


def lock_endpoint(endpoint_id: int) -> None:
    """The first lock of every status write and of every end of a shadow, so that they take
    their locks in one order (the endpoint, its algorithm, its shadow) and never deadlock."""
    Endpoint.objects.select_for_update().only("pk").get(pk=endpoint_id)


def _lock(algorithm: MLAlgorithm) -> None:
    # The algorithm's row too, so two concurrent changes serialise instead of both
    # deactivating the old status and tripping the one-active-status constraint.
    lock_endpoint(algorithm.parent_endpoint_id)
    MLAlgorithm.objects.select_for_update().only("pk").get(pk=algorithm.pk)


def _end_shadow(algorithm: MLAlgorithm, *, old: str, new: str, by: str) -> None:
    """End the endpoint's running shadow, recorded, because ``algorithm`` went from ``old``
    to ``new``; the candidate's previous status is restored, unless the write was the
    candidate's own (its new status stands). The shadow's services end it themselves
    before they change a status (stop, promote, an A/B test from it), so they never come
    here with it running."""
    shadow = (
        Shadow.objects.select_for_update()
        .select_related("candidate")
        .filter(endpoint_id=algorithm.parent_endpoint_id, state=Shadow.State.RUNNING)
        .first()
    )
    if shadow is None:
        return
    shadow.state = Shadow.State.ENDED
    shadow.ended_at = timezone.now()
    shadow.ended_by = by
    shadow.end_reason = (
        f"The versions it was compared with changed: {algorithm.name} {algorithm.version} "
        f"went from {old or 'no status'} to {new}."
    )
    shadow.save(update_fields=["state", "ended_at", "ended_by", "end_reason"])
    if shadow.candidate_id != algorithm.pk:
        restore_status(algorithm=shadow.candidate, previous=shadow.previous_status, by=by)
