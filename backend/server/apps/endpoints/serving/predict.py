"""Predict: records in, answers out, each one logged (``POST /api/v1/<endpoint>/predict``).

A request is a batch of one, or of a few records: the same pipeline as a file
(``pipeline.py``), read from JSON, run inline. Keyword-only functions; they raise
``apps.core.errors`` types, which the exception handler maps to HTTP.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from apps.core import telemetry
from apps.endpoints.catalogue import demo
from apps.endpoints.models import MLAlgorithm
from apps.endpoints.serving import feedback, pipeline, routing
from apps.endpoints.shadows import copying
from apps.ml.answer import Answer, ModelOutput, Prediction
from apps.ml.signature import Signature


class AlgorithmRef(TypedDict):
    id: int
    name: str
    version: str


class ServedPrediction(Prediction):
    """A prediction as the API answers it: the model's answer (``answer.Answer``), where
    it is logged (``answer.ENVELOPE``), and the version that answered."""

    request_id: int
    feedback_token: str  # proves the right to give this request's feedback (feedback.py)
    algorithm: AlgorithmRef


@dataclass
class Served:
    """A request's answers, as kept: the scored batch (``output``, columnar), each row's
    log id and feedback token, and the version that answered."""

    scored: pipeline.ScoredBatch
    request_ids: list[int]
    algorithm: MLAlgorithm

    @property
    def answer(self) -> Answer:
        return self.scored.answer

    @property
    def output(self) -> ModelOutput:
        return self.scored.output

    def feedback_tokens(self) -> list[str]:
        return feedback.tokens_for(self.request_ids)

    def algorithm_ref(self) -> AlgorithmRef:
        algorithm = self.algorithm
        return AlgorithmRef(id=algorithm.pk, name=algorithm.name, version=algorithm.version)


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
    """Serve ``records`` (``serve``) and answer each as ``POST /api/v1/<endpoint>/predict``
    does: the model's answer, its log id and feedback token, the version."""
    served = serve(
        endpoint_name=endpoint_name,
        batch=pipeline.Batch.of_records(records),
        status=status,
        version=version,
        assignment_key=assignment_key,
        rng=rng,
        user_id=user_id,
    )
    ref = served.algorithm_ref()
    return [
        ServedPrediction(**prediction, request_id=pk, feedback_token=token, algorithm=ref)
        for prediction, pk, token in zip(
            served.answer.predictions(served.output),
            served.request_ids,
            served.feedback_tokens(),
            strict=True,
        )
    ]


def serve(
    *,
    endpoint_name: str,
    batch: pipeline.Batch,
    status: str,
    version: str | None = None,
    assignment_key: str | None = None,
    rng: random.Random | None = None,
    user_id: int | None = None,
    check: Callable[[Signature], None] | None = None,
) -> Served:
    """Serve the records of ``batch`` with one version and log each as an ``MLRequest``:
    every route a client waits on for its answers (predict, the Open Inference Protocol,
    MLflow's scoring format) comes here.

    Batched by construction: one model call for all records, one write for all log rows
    (``bulk.py``: the ORM cost more than the compiled model per row). With status
    ``ab_testing`` (and no version) the endpoint's running A/B test routes the whole
    request (``routing.for_request``) and each row records the test. ``rng`` draws the A/B
    arm and the shadow's share (injectable for tests). ``user_id``: the authenticated
    client, who alone may then read the rows and give their feedback. Once logged, the
    endpoint's shadow, if it has one, gets a copy (``shadows/copying.py``). ``check``: a
    protocol's own checks of the request against the signature of the version that will
    answer, before anything is scored or logged."""
    demo.ensure_registered()
    start = time.perf_counter()
    arms = routing.for_request(
        endpoint_name=endpoint_name,
        status=status,
        version=version,
        assignment_key=assignment_key,
        rng=rng,
    )
    [algorithm] = arms.algorithms
    runtimes = arms.runtimes()
    if check is not None:
        check(runtimes[0].signature)
    answer = runtimes[0].answer
    log = pipeline.LogWriter(arms, answer, user_id=user_id, client=None)
    scored = pipeline.ScoredBatch(arms, answer, log=log)
    pipeline.run([batch], arms, runtimes, [log, scored], overlap=False)
    ids = scored.request_ids.tolist()
    # After the log is written: the endpoint's shadow, if any, scores a copy later, off
    # this request's path (shadows/copying.py).
    copying.offer(
        endpoint_name=endpoint_name,
        status=arms.status,
        request_ids=ids,
        records=batch.as_records,
        responses=lambda: answer.responses(scored.output),
        production_ms=(time.perf_counter() - start) * 1000,
        rng=rng,
    )
    telemetry.count_predictions(
        endpoint=endpoint_name,
        algorithm=algorithm.name,
        version=algorithm.version,
        status=status,
        records=len(ids),
    )
    return Served(scored, ids, algorithm)
