"""Batch predictions from an uploaded CSV file, for any endpoint
(``POST /api/v1/batch-predict``): the file read by ``reading.CsvFile``, scored by the
pipeline (``serving/pipeline.py``), logged a row per record, answered as it was kept
(``output.py``).

A bad cell on the last line leaves nothing written: on PostgreSQL the whole upload is one
transaction; on SQLite, whose single write lock that transaction would hold for the whole
upload (single predictions waited behind it, then failed), each chunk commits on its own
and a failed upload deletes what it committed.

The target column (the algorithm's ``target_column``, else ``BATCH_LABEL_COLUMNS`` for the
endpoint) becomes each row's feedback, and the answer reports the offline evaluation:
accuracy for a classifier; MAE, RMSE and R² for a regressor (``experiments/evaluation.py``).

With ``log_requests`` false the rows are scored and answered, and nothing is written: no
log rows, no tokens, and a label column is evaluated but not recorded. An A/B test is
judged on its log, so ``status=ab_testing`` needs the log (a 400 otherwise). Drift
monitoring still sees the rows (it is not the log).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import IO

from django.conf import settings
from django.db import connection, transaction

from apps.core import telemetry
from apps.core.errors import InvalidInput
from apps.endpoints import policy
from apps.endpoints.batch.reading import CsvFile
from apps.endpoints.catalogue import demo
from apps.endpoints.catalogue.selectors import sole_endpoint_name
from apps.endpoints.models import MLAlgorithmStatus
from apps.endpoints.serving import pipeline, routing
from apps.endpoints.serving.pipeline import ScoredBatch


def score_upload(
    *,
    upload: IO[bytes],
    endpoint_name: str | None,
    status: str,
    version: str | None = None,
    actor: policy.Actor,
    log_requests: bool = True,
    answer_json: bool = False,
) -> ScoredBatch:
    """Predict every row of the CSV ``upload`` and log each one (unless ``log_requests`` is
    false); see the module docstring. ``actor``: the client; its user is recorded on every
    row, and a label column is its feedback where it may give feedback
    (``policy.feedback_refusal``). ``answer_json``: the answer will be the JSON stream
    (``output.json_stream``), so unlogged rows are written as JSON as they are scored."""
    if not log_requests and status == MLAlgorithmStatus.Status.AB_TESTING:
        raise InvalidInput(
            "An A/B test is judged on its log: status=ab_testing needs log_requests=true."
        )
    demo.ensure_registered()
    endpoint_name = endpoint_name or sole_endpoint_name()
    arms = routing.for_file(endpoint_name=endpoint_name, status=status, version=version)
    runtimes = arms.runtimes()
    label = arms.algorithms[0].target_column or settings.BATCH_LABEL_COLUMNS.get(endpoint_name)
    source = CsvFile.open(
        upload,
        runtimes,
        label_column=label or None,
        max_rows=settings.BATCH_MAX_ROWS,
        ramp=log_requests or answer_json,
    )
    answer = runtimes[0].answer
    # SQLite outside a transaction of the caller's (a test's, say): commit per chunk.
    pieces = connection.vendor == "sqlite" and connection.get_autocommit()
    refusal = None
    if source.label_column:
        refusal = policy.feedback_refusal(actor.user) if log_requests else NOT_LOGGED
    log = None
    if log_requests:
        log = pipeline.LogWriter(
            arms,
            answer,
            user_id=actor.user_id,
            client=actor.label,
            features=source.features,
            mode="pieces" if pieces else "behind",
            labels_as_feedback=refusal is None,
        )
    scored = ScoredBatch(
        arms,
        answer,
        log=log,
        header=source.header,
        ignored_columns=source.ignored_columns,
        label_column=source.label_column,
        labels_note=None if refusal is None else _not_recorded(refusal),
        json_rows=answer_json and sum(source.plan) <= JSON_ROWS_MAX,
    )
    writers: list[pipeline.Writer] = [scored] if log is None else [log, scored]
    with nullcontext() if pieces or log is None else transaction.atomic():
        pipeline.run(source.batches(), arms, runtimes, writers)
    if scored.count == 0:
        raise InvalidInput("The file has a header but no rows.")
    telemetry.count_scored(
        endpoint=endpoint_name,
        versions=[(a.name, a.version) for a in arms.algorithms],
        rows=scored.rows_per_arm(),
        status=status,
    )
    return scored


NOT_LOGGED = "log_requests is false, so the rows were not logged."

# Rows answered as JSON are written as they are scored (``ScoredBatch``'s ``json_rows``)
# in files of up to this many rows: the text is held until the answer streams, about 120
# bytes a row against the arrays' 90 (logged, with id and token, about 190 against 110),
# so past this a file keeps its arrays and its memory does not grow with the gain
# (docs/speed.md).
JSON_ROWS_MAX = 200_000


def _not_recorded(refusal: str) -> str:
    return f"The label column was scored but not recorded as feedback: {refusal}"
