"""Writes: registering algorithms, changing statuses, serving predictions.

The A/B test lifecycle is in ``ab_testing.py``.

Keyword-only functions, each one transaction where its writes belong together. They raise
``apps.endpoints.errors`` types, which the exception handler maps to HTTP.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict

from django.db import IntegrityError, transaction

from apps.endpoints import ab_testing, bulk, feedback, selectors
from apps.endpoints.errors import AmbiguousAlgorithm, InvalidInput
from apps.endpoints.models import Endpoint, MLAlgorithm, MLAlgorithmStatus, Task
from apps.ml import registry as ml_registry
from apps.ml.income_classifier.base import Prediction
from apps.ops import metrics as ops_metrics

Status = MLAlgorithmStatus.Status
ChooseArm = Callable[[Sequence[MLAlgorithm]], MLAlgorithm]


# -- the catalogue -----------------------------------------------------------------------


def register_algorithm(
    *,
    endpoint_name: str,
    name: str,
    version: str,
    status: str,
    owner: str,
    description: str,
    code: str,
    wrapper: str,
    artifact: str,
    artifact_sha256: str,
    sklearn_version: str,
    features: Sequence[Mapping[str, str]] = (),
    metrics: Mapping[str, float] | None = None,
    task: str = Task.CLASSIFICATION,
    classes: Sequence[str] = (),
) -> tuple[MLAlgorithm, bool]:
    """The algorithm row for (endpoint, name, version), created with an initial active
    status when missing; returns it and whether it was created.

    Matching is on the identity (endpoint, name, version) only, never on mutable fields
    such as the code or the description: editing a wrapper must not create a second row.
    Safe when several processes register the same algorithm at once: the unique constraint
    decides, and the losers read the winner's row.
    """
    _check_status(status)
    endpoint, _ = Endpoint.objects.get_or_create(name=endpoint_name, defaults={"owner": owner})
    identity = {"parent_endpoint": endpoint, "name": name, "version": version}
    existing = MLAlgorithm.objects.filter(**identity).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            algorithm = MLAlgorithm.objects.create(
                **identity,
                owner=owner,
                description=description,
                code=code,
                wrapper=wrapper,
                artifact=artifact,
                artifact_sha256=artifact_sha256,
                sklearn_version=sklearn_version,
                features=[dict(f) for f in features],
                metrics=dict(metrics or {}),
                task=task,
                classes=[str(c) for c in classes],
            )
            MLAlgorithmStatus.objects.create(
                status=status, active=True, created_by=owner, parent_mlalgorithm=algorithm
            )
    except IntegrityError:
        return MLAlgorithm.objects.get(**identity), False
    return algorithm, True


def record_model_card(
    *, algorithm: MLAlgorithm, features: Sequence[Mapping[str, str]], metrics: Mapping[str, float]
) -> None:
    """Fill the card of a row registered before cards existed, from its verified artifact.
    The card describes the recorded file, so it can be written once and never changes."""
    algorithm.features = [dict(f) for f in features]
    algorithm.metrics = dict(metrics)
    MLAlgorithm.objects.filter(pk=algorithm.pk).update(
        features=algorithm.features, metrics=algorithm.metrics
    )


def _check_status(status: str) -> None:
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
    _check_status(status)
    # Lock the algorithm so two concurrent changes serialise instead of both deactivating
    # the old status and tripping the one-active-status constraint.
    MLAlgorithm.objects.select_for_update().only("pk").get(pk=algorithm.pk)
    MLAlgorithmStatus.objects.filter(parent_mlalgorithm=algorithm, active=True).update(active=False)
    created = MLAlgorithmStatus.objects.create(
        status=status, active=True, created_by=created_by, parent_mlalgorithm=algorithm
    )
    # Now, and again once committed, so that no request in between caches the old state.
    selectors.forget_selections()
    transaction.on_commit(selectors.forget_selections)
    return created


# -- predictions -------------------------------------------------------------------------


class AlgorithmRef(TypedDict):
    id: int
    name: str
    version: str


class ServedPrediction(Prediction):
    """A prediction as the API answers it: the wrapper's payload, the log row, the model."""

    request_id: int
    feedback_token: str  # proves the right to give this request's feedback (feedback.py)
    algorithm: AlgorithmRef


def candidate_algorithms(
    *, endpoint_name: str, status: str, version: str | None
) -> list[MLAlgorithm]:
    """The design's selection rules: the algorithms with this active status (and version).
    Exactly one serves; several are an error unless they are the arms of an A/B test, in
    which case all of them are returned and the caller picks per request (or per row)."""
    _check_status(status)
    candidates = selectors.algorithms_for_prediction(
        endpoint_name=endpoint_name, status=status, version=version
    )
    if len(candidates) == 1 or status == Status.AB_TESTING:
        return candidates
    raise AmbiguousAlgorithm(
        f"{len(candidates)} algorithms of '{endpoint_name}' have status '{status}'; "
        "pass ?version= to choose one.",
        details={"candidates": [_ref(a) for a in candidates]},
    )


def select_algorithm(
    *, endpoint_name: str, status: str, version: str | None, choose: ChooseArm
) -> MLAlgorithm:
    """The one algorithm that serves a request (an A/B arm chosen by ``choose``)."""
    candidates = candidate_algorithms(endpoint_name=endpoint_name, status=status, version=version)
    return candidates[0] if len(candidates) == 1 else choose(candidates)


def predict(
    *,
    endpoint_name: str,
    records: Sequence[Mapping[str, Any]],
    status: str,
    version: str | None = None,
    assignment_key: str | None = None,
    rng: random.Random | None = None,
    user_id: int | None = None,
) -> list[ServedPrediction]:
    """Serve ``records`` with one algorithm and log each as an ``MLRequest``.

    Batched by construction: one model call for all records, one bulk write for all log
    rows (``bulk.py``: the ORM cost more than the compiled model per row). With status
    ``ab_testing`` (and no version) the endpoint's running A/B test
    routes the whole batch (``ab_testing.route``, by ``assignment_key`` when given) and each
    row records the test. ``rng`` draws the A/B arm (injectable for tests). ``user_id``: the
    authenticated client, who alone may then read the rows and give their feedback."""
    registry = ml_registry.get_registry()
    registry.ensure_declared()
    _check_status(status)
    abtest = None
    if status == Status.AB_TESTING and version is None:
        algorithm, abtest = ab_testing.route(
            endpoint_name=endpoint_name, assignment_key=assignment_key, rng=rng
        )
    else:
        algorithm = select_algorithm(
            endpoint_name=endpoint_name,
            status=status,
            version=version,
            choose=(rng or random).choice,
        )
    predictions = registry.get(algorithm).compute_predictions(records)
    abtest_id = abtest.pk if abtest else None
    rows: list[bulk.Row] = [
        (
            json.dumps(record),
            json.dumps(prediction),
            prediction["label"],
            None,
            algorithm.pk,
            abtest_id,
            user_id,
            None,
        )
        for record, prediction in zip(records, predictions, strict=True)
    ]
    if len(rows) == 1:
        ids = [bulk.insert_request(rows[0])]
    else:
        with transaction.atomic():
            ids = bulk.insert_requests(rows).tolist()
    ops_metrics.count_predictions(
        endpoint=endpoint_name, algorithm=algorithm, status=status, records=len(ids)
    )
    ref = _ref(algorithm)
    return [
        ServedPrediction(
            **prediction, request_id=pk, feedback_token=feedback.token_for(pk), algorithm=ref
        )
        for prediction, pk in zip(predictions, ids, strict=True)
    ]


def _ref(algorithm: MLAlgorithm) -> AlgorithmRef:
    return AlgorithmRef(id=algorithm.pk, name=algorithm.name, version=algorithm.version)
