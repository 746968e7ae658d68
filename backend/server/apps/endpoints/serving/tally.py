"""The feedback tally: per algorithm, the counts /metrics shows, kept as feedback is written.

Aggregating the request log at every scrape cost 0.3 s at 200k rows and 1.3 s at 1M on
PostgreSQL (bench/metrics_bench.py), growing with the log. Instead every write that sets,
changes or clears ``MLRequest.feedback`` adds what it changed to a ``Changes`` and saves
it with ``save``, in its own transaction:

- ``feedback.give`` and ``give_many`` (the API, the admin, CSV files of feedback): the old
  value is taken out and the new one added;
- ``bulk.insert_requests``, ``insert_request`` and ``BackgroundWriter`` (batch files with a
  label column): rows written with their feedback;
- ``feedback.delete_requests`` (the admin, and anything else that deletes logged requests):
  deleted rows' feedback is taken out.

``recount`` rebuilds it from the log (``manage.py recount_feedback``), the way
``feedback_counts_by_scan`` counts: the response and the feedback compared as
text, and for regressors |float(feedback) - float(response)|.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from django.db import connection, transaction

from apps.endpoints.models import FeedbackTally, MLAlgorithm, Task
from apps.endpoints.serving.selectors import feedback_counts_by_scan


class Labelled(Protocol):
    """What the tally reads of a log row written with its feedback (``bulk.LogRow``)."""

    @property
    def feedback(self) -> str | None: ...
    @property
    def response(self) -> str: ...
    @property
    def algorithm_id(self) -> int: ...


@dataclass
class Delta:
    given: int = 0
    correct: int = 0
    absolute_error: float = 0.0


class Changes:
    """What a transaction changed, per algorithm id, until it is saved."""

    def __init__(self) -> None:
        self.deltas: dict[int, Delta] = {}

    def replace(
        self, *, algorithm_id: int, response: str, old: str | None, new: str | None, task: str
    ) -> None:
        """A request's feedback went from ``old`` to ``new`` (None: none)."""
        if old == new:
            return
        delta = self.deltas.setdefault(algorithm_id, Delta())
        regression = task == Task.REGRESSION
        if old is not None:
            delta.given -= 1
            delta.correct -= old == response
            if regression:
                delta.absolute_error -= abs(float(old) - float(response))
        if new is not None:
            delta.given += 1
            delta.correct += new == response
            if regression:
                delta.absolute_error += abs(float(new) - float(response))

    def add_rows(self, rows: Iterable[Labelled], *, regressors: Collection[int]) -> None:
        """New log rows, written with their feedback (or None); ``regressors``: the ids of
        the algorithms that are regressors (``regressor_ids``)."""
        deltas = self.deltas
        for row in rows:
            new = row.feedback
            if new is None:
                continue
            response, algorithm_id = row.response, row.algorithm_id
            delta = deltas.get(algorithm_id)
            if delta is None:
                delta = deltas[algorithm_id] = Delta()
            delta.given += 1
            delta.correct += new == response
            if algorithm_id in regressors:
                delta.absolute_error += abs(float(new) - float(response))


def regressor_ids() -> set[int]:
    """The ids of the algorithms that are regressors (a few rows)."""
    return set(MLAlgorithm.objects.filter(task=Task.REGRESSION).values_list("pk", flat=True))


_TABLE = FeedbackTally._meta.db_table


def save(changes: Changes) -> None:
    """Add ``changes`` to the tally, in the caller's transaction (the one that wrote the
    feedback), in one statement.

    An upsert whose update adds to the stored values (``given = given + excluded.given``)
    rather than writing what was read: two transactions adding to one algorithm at once
    both count, as the second waits for the first's row lock. Rows are written in
    algorithm order, so two transactions that touch the same algorithms lock them in the
    same order and cannot deadlock. Best called at the end of the transaction: the row
    stays locked until it commits."""
    if connection.get_autocommit():
        raise RuntimeError("tally.save must run in the transaction that wrote the feedback")
    deltas = sorted((pk, d) for pk, d in changes.deltas.items() if _nonzero(d))
    if not deltas:
        return
    values = ", ".join(["(%s, %s, %s, %s)"] * len(deltas))
    params = [x for pk, d in deltas for x in (pk, d.given, d.correct, d.absolute_error)]
    added = ", ".join(f"{c} = {_TABLE}.{c} + excluded.{c}" for c in _COUNTS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_TABLE} (algorithm_id, {', '.join(_COUNTS)}) VALUES {values} "
            f"ON CONFLICT (algorithm_id) DO UPDATE SET {added}",
            params,
        )


_COUNTS = ("given", "correct", "absolute_error")


def _nonzero(delta: Delta) -> bool:
    return bool(delta.given or delta.correct or delta.absolute_error)


@transaction.atomic
def recount() -> int:
    """Rebuild the tally from the request log; returns how many algorithms' counts it
    corrected (0 when the tally was right).

    On PostgreSQL the tally is locked first, against writers (SHARE ROW EXCLUSIVE: they
    wait at their ``save``): one that saved before sees its requests counted by the scan
    that follows, one that saves after adds its change to the rebuilt row. SQLite writes
    one transaction at a time anyway."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {_TABLE} IN SHARE ROW EXCLUSIVE MODE")
    counted = {
        c.algorithm_id: (c.given, c.correct, c.absolute_error) for c in feedback_counts_by_scan()
    }
    kept = {
        pk: (given, correct, error)
        for pk, given, correct, error in FeedbackTally.objects.values_list(
            "algorithm_id", "given", "correct", "absolute_error"
        )
        if given or correct or error
    }
    FeedbackTally.objects.all().delete()
    FeedbackTally.objects.bulk_create(
        FeedbackTally(algorithm_id=pk, given=given, correct=correct, absolute_error=error)
        for pk, (given, correct, error) in counted.items()
    )
    return sum(
        1
        for pk in counted.keys() | kept.keys()
        if not _same(counted.get(pk, (0, 0, 0.0)), kept.get(pk, (0, 0, 0.0)))
    )


def _same(a: tuple[int, int, float], b: tuple[int, int, float]) -> bool:
    # A sum of floats depends on the order it was added in: equal to 1e-9 is the same.
    return a[:2] == b[:2] and abs(a[2] - b[2]) <= 1e-9 * max(1.0, abs(a[2]))
