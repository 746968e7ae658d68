"""The catalogue's status writes: a version's active status, and the history it leaves."""

from __future__ import annotations

from django.db import transaction

from apps.core.errors import InvalidInput
from apps.endpoints.catalogue.selectors import forget_selections
from apps.endpoints.models import MLAlgorithm, MLAlgorithmStatus

Status = MLAlgorithmStatus.Status


def check_status(status: str) -> None:
    """``InvalidInput`` unless ``status`` is one of the statuses."""
    if status not in Status.values:
        raise InvalidInput(
            f"'{status}' is not a status.",
            details={"status": [f"Expected one of: {', '.join(Status.values)}."]},
        )


@transaction.atomic
def set_algorithm_status(
    *, algorithm: MLAlgorithm, status: str, created_by: str
) -> MLAlgorithmStatus:
    """Make ``status`` the algorithm's active status; the previous one stays as history."""
    check_status(status)
    # Lock the algorithm so two concurrent changes serialise instead of both deactivating
    # the old status and tripping the one-active-status constraint.
    MLAlgorithm.objects.select_for_update().only("pk").get(pk=algorithm.pk)
    MLAlgorithmStatus.objects.filter(parent_mlalgorithm=algorithm, active=True).update(active=False)
    created = MLAlgorithmStatus.objects.create(
        status=status, active=True, created_by=created_by, parent_mlalgorithm=algorithm
    )
    # Now, and again once committed, so that no request in between caches the old state.
    forget_selections()
    transaction.on_commit(forget_selections)
    return created
