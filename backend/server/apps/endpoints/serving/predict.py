"""Serving: select the algorithm (or let an A/B test route), predict, log.

The catalogue's writes are in ``catalogue/``, the A/B lifecycle in
``experiments/ab_testing.py``.
Keyword-only functions; they raise ``apps.core.errors`` types, which the exception handler
maps to HTTP.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict

from django.db import transaction

from apps.core import telemetry
from apps.core.errors import AmbiguousAlgorithm
from apps.endpoints.catalogue import demo
from apps.endpoints.catalogue.selectors import algorithms_for_prediction
from apps.endpoints.catalogue.statuses import check_status
from apps.endpoints.experiments import ab_testing
from apps.endpoints.models import ABTest, MLAlgorithm, MLAlgorithmStatus
from apps.endpoints.serving import bulk, feedback
from apps.ml import codecs
from apps.ml import registry as ml_registry
from apps.ml.codecs import Prediction

Status = MLAlgorithmStatus.Status
ChooseArm = Callable[[Sequence[MLAlgorithm]], MLAlgorithm]


# -- predictions -------------------------------------------------------------------------


class AlgorithmRef(TypedDict):
    id: int
    name: str
    version: str


class ServedPrediction(Prediction):
    """A prediction as the API answers it: the model's answer, the log row, the model."""

    request_id: int
    feedback_token: str  # proves the right to give this request's feedback (feedback.py)
    algorithm: AlgorithmRef


def candidate_algorithms(
    *, endpoint_name: str, status: str, version: str | None
) -> list[MLAlgorithm]:
    """The design's selection rules: the algorithms with this active status (and version).
    Exactly one serves; several are an error unless they are the arms of an A/B test, in
    which case all of them are returned and the caller picks per request (or per row)."""
    check_status(status)
    candidates = algorithms_for_prediction(
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
    demo.ensure_registered()
    abtest = None  # the status is checked by candidate_algorithms (ab_testing is valid)
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
    served = records if abtest is None else _for_arm(records, abtest, algorithm)
    predictions = ml_registry.get_registry().get(algorithm).compute_predictions(served)
    abtest_id = abtest.pk if abtest else None
    rows = [
        bulk.LogRow(
            json.dumps(record),
            json.dumps(prediction),
            codecs.response_text(prediction),
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
    telemetry.count_predictions(
        endpoint=endpoint_name,
        algorithm=algorithm.name,
        version=algorithm.version,
        status=status,
        records=len(ids),
    )
    ref = _ref(algorithm)
    return [
        ServedPrediction(**prediction, request_id=pk, feedback_token=token, algorithm=ref)
        for prediction, pk, token in zip(predictions, ids, feedback.tokens_for(ids), strict=True)
    ]


def _for_arm(
    records: Sequence[Mapping[str, Any]], abtest: ABTest, arm: MLAlgorithm
) -> Sequence[Mapping[str, Any]]:
    """The records as the routed arm takes them. The two versions of a test may take
    different features (a challenger that uses one more): the client, who cannot know its
    arm, sends what either takes, and each arm gets its own. A feature neither takes is
    still refused."""
    others = {
        f["name"] for version in abtest.arms if version.pk != arm.pk for f in version.features
    }
    own = {f["name"] for f in arm.features}
    extra = others - own
    if not extra:
        return records
    return [
        {k: v for k, v in r.items() if k not in extra} if isinstance(r, Mapping) else r
        for r in records
    ]


def _ref(algorithm: MLAlgorithm) -> AlgorithmRef:
    return AlgorithmRef(id=algorithm.pk, name=algorithm.name, version=algorithm.version)
