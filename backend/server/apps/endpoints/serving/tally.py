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

The same transaction adds the requests' pairs to their running shadow's counters
(``shadows.services.count_pairs``): rows written with their feedback never have a shadow's
answer yet (batch files are not copied, and a copy is scored after its rows commit).

``recount`` rebuilds it from the log (``manage.py recount_feedback``), the way
``feedback_counts_by_scan`` counts: the response and the feedback compared as
text, and for regressors |float(feedback) - float(response)|.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from django.db import connection, transaction

from apps.endpoints.experiments import ab_testing
from apps.endpoints.experiments.evaluation import observation
from apps.endpoints.models import (
    ABTest,
    ABTestTally,
    FeedbackTally,
    MLAlgorithm,
    MLRequest,
    Task,
)
from apps.endpoints.serving.selectors import feedback_counts_by_scan
from apps.endpoints.shadows import services as shadows


class Labelled(Protocol):
    """What the tally reads of a log row written with its feedback (``bulk.LogRow``)."""

    @property
    def feedback(self) -> str | None: ...
    @property
    def response(self) -> str: ...
    @property
    def algorithm_id(self) -> int: ...
    @property
    def ab_test_id(self) -> int | None: ...


@dataclass
class Delta:
    given: int = 0
    correct: int = 0
    absolute_error: float = 0.0


@dataclass
class ArmDelta:
    """What changed in one arm of one A/B test: its observations' count, sum and sum of
    squares (``observation``)."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, x: float, sign: int) -> None:
        self.count += sign
        self.total += sign * x
        self.total_sq += sign * x * x


class Changes:
    """What a transaction changed, per algorithm id, and per arm of an A/B test (the test's
    id and the algorithm's), until it is saved."""

    def __init__(self) -> None:
        self.deltas: dict[int, Delta] = {}
        self.arms: dict[tuple[int, int], ArmDelta] = {}
        # request id -> (its feedback before the transaction, after): for a shadow's pairs
        self.requests: dict[int, tuple[str | None, str | None]] = {}

    def replace(
        self,
        *,
        request_id: int,
        algorithm_id: int,
        response: str,
        old: str | None,
        new: str | None,
        task: str,
        ab_test_id: int | None = None,
    ) -> None:
        """A request's feedback went from ``old`` to ``new`` (None: none); ``ab_test_id``:
        the test that routed the request, if one did."""
        if old == new:
            return
        first = self.requests.get(request_id)
        self.requests[request_id] = (old if first is None else first[0], new)
        delta = self.deltas.setdefault(algorithm_id, Delta())
        regression = task == Task.REGRESSION
        arm = (
            None
            if ab_test_id is None
            else self.arms.setdefault((ab_test_id, algorithm_id), ArmDelta())
        )
        if old is not None:
            delta.given -= 1
            delta.correct -= old == response
            if regression:
                delta.absolute_error -= abs(float(old) - float(response))
            if arm is not None:
                arm.add(observation(response, old, regression=regression), -1)
        if new is not None:
            delta.given += 1
            delta.correct += new == response
            if regression:
                delta.absolute_error += abs(float(new) - float(response))
            if arm is not None:
                arm.add(observation(response, new, regression=regression), +1)

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
            regression = algorithm_id in regressors
            if regression:
                delta.absolute_error += abs(float(new) - float(response))
            if row.ab_test_id is not None:
                arm = self.arms.setdefault((row.ab_test_id, algorithm_id), ArmDelta())
                arm.add(observation(response, new, regression=regression), +1)


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
    if deltas:
        values = ", ".join(["(%s, %s, %s, %s)"] * len(deltas))
        params = [x for pk, d in deltas for x in (pk, d.given, d.correct, d.absolute_error)]
        added = ", ".join(f"{c} = {_TABLE}.{c} + excluded.{c}" for c in _COUNTS)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {_TABLE} (algorithm_id, {', '.join(_COUNTS)}) VALUES {values} "
                f"ON CONFLICT (algorithm_id) DO UPDATE SET {added}",
                params,
            )
    _save_arms(changes)
    # Requests a shadow answered: their pairs, in the shadow's counters (shadows/services).
    shadows.count_pairs({pk: c for pk, c in changes.requests.items() if c[0] != c[1]})


_COUNTS = ("given", "correct", "absolute_error")
_ARMS_TABLE = ABTestTally._meta.db_table
_ARM_COUNTS = ("count", "total", "total_sq")


def _save_arms(changes: Changes) -> None:
    """The arms of running A/B tests, as ``save`` does the algorithms (an upsert that adds,
    in (test, algorithm) order); then, once the transaction commits, each test takes a look
    (``ab_testing.look``: its sequence, the running minimum of its p-value, ``auto_stop``).
    A stopped test is left as it was decided: feedback to its requests, or their deletion,
    changes nothing of it."""
    arms = {key: d for key, d in changes.arms.items() if d.count or d.total or d.total_sq}
    if not arms:
        return
    running = set(
        ABTest.objects.filter(
            pk__in={test for test, _ in arms}, state=ABTest.State.RUNNING
        ).values_list("pk", flat=True)
    )
    rows = sorted((key, d) for key, d in arms.items() if key[0] in running)
    if not rows:
        return
    values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(rows))
    params = [
        x for (test, algorithm), d in rows for x in (test, algorithm, d.count, d.total, d.total_sq)
    ]
    added = ", ".join(f"{c} = {_ARMS_TABLE}.{c} + excluded.{c}" for c in _ARM_COUNTS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_ARMS_TABLE} (ab_test_id, algorithm_id, {', '.join(_ARM_COUNTS)}) "
            f"VALUES {values} ON CONFLICT (ab_test_id, algorithm_id) DO UPDATE SET {added}",
            params,
        )
    tests = sorted(running)
    transaction.on_commit(lambda: ab_testing.look(tests))


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
    wrong = sum(
        1
        for pk in counted.keys() | kept.keys()
        if not _same(counted.get(pk, (0, 0, 0.0)), kept.get(pk, (0, 0, 0.0)))
    )
    return wrong + _recount_arms()


def _recount_arms() -> int:
    """Rebuild the running A/B tests' arms (``ABTestTally``) from their log rows, read once
    (a stopped test's stay as they were decided); how many arms it corrected. On PostgreSQL
    under the same lock as ``recount``'s, taken on this table too."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {_ARMS_TABLE} IN SHARE ROW EXCLUSIVE MODE")
    running = ABTest.objects.filter(state=ABTest.State.RUNNING)
    regressors = regressor_ids()
    counted: dict[tuple[int, int], ArmDelta] = {}
    rows = MLRequest.objects.filter(ab_test__in=running, feedback__isnull=False)
    for test, algorithm, response, value in rows.values_list(
        "ab_test_id", "parent_mlalgorithm_id", "response", "feedback"
    ).iterator():
        if test is None or value is None:  # not there: the filter; for the type checker
            continue
        x = observation(response, value, regression=algorithm in regressors)
        counted.setdefault((test, algorithm), ArmDelta()).add(x, +1)
    kept = {
        (t, a): (n, total, total_sq)
        for t, a, n, total, total_sq in ABTestTally.objects.filter(ab_test__in=running).values_list(
            "ab_test_id", "algorithm_id", "count", "total", "total_sq"
        )
        if n or total or total_sq
    }
    ABTestTally.objects.filter(ab_test__in=running).delete()
    ABTestTally.objects.bulk_create(
        ABTestTally(ab_test_id=t, algorithm_id=a, count=d.count, total=d.total, total_sq=d.total_sq)
        for (t, a), d in counted.items()
    )
    found = {key: (d.count, d.total, d.total_sq) for key, d in counted.items()}
    return sum(
        1
        for key in found.keys() | kept.keys()
        if not _same_arm(found.get(key, (0, 0.0, 0.0)), kept.get(key, (0, 0.0, 0.0)))
    )


def _same_arm(a: tuple[int, float, float], b: tuple[int, float, float]) -> bool:
    return a[0] == b[0] and all(
        abs(x - y) <= 1e-9 * max(1.0, abs(x)) for x, y in zip(a[1:], b[1:], strict=True)
    )


def _same(a: tuple[int, int, float], b: tuple[int, int, float]) -> bool:
    # A sum of floats depends on the order it was added in: equal to 1e-9 is the same.
    return a[:2] == b[:2] and abs(a[2] - b[2]) <= 1e-9 * max(1.0, abs(a[2]))
