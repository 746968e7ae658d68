"""Copies of live predictions for the endpoint's shadow, scored off the request path.

Predict answers first. Once its log rows are committed, ``offer`` puts a copy of the
request (its records, its log ids, production's answers) on this process's bounded queue
and returns: an append, no I/O. One worker thread per process takes the copies in order,
as many as wait (up to ``BATCH``), scores them with the candidate's runtime in one call
and writes the shadow's answers beside production's (``ShadowAnswer``, keyed by the log
row) with the shadow's counters, in one transaction: under load, the database sees a
write per batch of copies rather than per copy.

- A full queue (``SHADOW_QUEUE_SIZE`` copies waiting) drops the copy and counts it: the
  client's answer never waits for the shadow. The count reaches the shadow's row with the
  worker's next write.
- A copy the candidate cannot score (it raises, refuses a record, answers NaN) is counted
  as ``failed`` and logged; nothing of production's answer, status code or log row
  depends on it, which were all done before the copy was made.
- Copies waiting when the process exits are lost: a shadow is a sample of the traffic,
  and ``dropped`` and ``copies`` say how large.

Why a thread and not a Celery task: docs/decisions.md, "Shadows".
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from apps.core.per_process import PerProcess
from apps.endpoints.catalogue.statuses import SERVING
from apps.endpoints.models import MLAlgorithm, MLRequest, ShadowAnswer, Task
from apps.endpoints.shadows import selectors, services
from apps.ml import codecs
from apps.ml import registry as ml_registry
from apps.ml.runtime import check_finite

logger = logging.getLogger(__name__)

# How long the worker keeps its database connection with no copy to write.
IDLE_SECONDS = 5.0
# Copies scored and written together at most, when that many wait.
BATCH = 100


@dataclass(frozen=True)
class Copy:
    """A request as the shadow scores it: production's records, log ids and answers."""

    shadow_id: int
    candidate: MLAlgorithm
    records: Sequence[Mapping[str, Any]]
    request_ids: Sequence[int]
    responses: Sequence[str]  # production's, as logged
    production_ms: float  # what predict took for the request (scoring and logging)


class _Worker:
    """The queue and its thread, one per process (``PerProcess``)."""

    def __init__(self) -> None:
        # None: the thread's signal to end (``reset``).
        self.queue: queue.Queue[Copy | None] = queue.Queue(maxsize=settings.SHADOW_QUEUE_SIZE)
        self.dropped: dict[int, int] = {}  # shadow id -> copies dropped, not yet written
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.run, name="shadow-copies", daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            try:
                taken = [self.queue.get(timeout=IDLE_SECONDS)]
            except queue.Empty:
                connection.close()  # idle: give the connection back
                continue
            # What else waits, up to BATCH: one model call and one transaction for them
            # all, so that a busy stretch costs the database a write per batch, not per copy.
            while len(taken) < BATCH:
                try:
                    taken.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            copies = [c for c in taken if c is not None]
            try:
                # One connection for the copies of a busy stretch (a connection per copy
                # would cost more than the copy); closed when idle, or after an error.
                score(copies, dropped=self.take_dropped())
            except Exception:  # whatever a shadow does, the thread goes on
                logger.exception("Shadow copies could not be written (%s).", len(copies))
                connection.close()
            finally:
                for _ in taken:
                    self.queue.task_done()
            if len(copies) < len(taken):  # reset's signal
                connection.close()
                return

    def take_dropped(self) -> dict[int, int]:
        with self.lock:
            dropped, self.dropped = self.dropped, {}
        return dropped

    def drop(self, shadow_id: int, count: int) -> None:
        with self.lock:
            self.dropped[shadow_id] = self.dropped.get(shadow_id, 0) + count


_worker = PerProcess(_Worker)


def offer(
    *,
    endpoint_name: str,
    status: str,
    request_ids: Sequence[int],
    records: Callable[[], Sequence[Mapping[str, Any]]],
    responses: Callable[[], Sequence[str]],
    production_ms: float,
    rng: random.Random | None = None,
) -> None:
    """Copy a request answered with ``status`` to the endpoint's running shadow, if it has
    one and the request falls in its share; once the caller's transaction commits (the
    log rows must be there for the shadow's answers to join). ``records`` and
    ``responses`` (production's answers as logged) are asked for only when there is a copy
    to make."""
    if status not in SERVING or not request_ids:
        return
    shadow = selectors.running_shadow(endpoint_name=endpoint_name)
    if shadow is None or (shadow.share < 1 and (rng or random).random() >= shadow.share):
        return
    copy = Copy(
        shadow.pk, shadow.candidate, records(), list(request_ids), list(responses()), production_ms
    )
    transaction.on_commit(lambda: _put(copy))


def _put(copy: Copy) -> None:
    worker = _worker.get()
    try:
        worker.queue.put_nowait(copy)
    except queue.Full:
        worker.drop(copy.shadow_id, len(copy.request_ids))


def drain(timeout: float = 10.0) -> None:
    """Wait until this process's queue is empty and its last copy written (tests, and a
    benchmark between its variants)."""
    worker = _worker.existing()
    if worker is not None:
        _drain(worker, timeout)


def _drain(worker: _Worker, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while worker.queue.unfinished_tasks:
        if time.monotonic() > deadline:
            raise TimeoutError("Shadow copies still waiting after drain's timeout.")
        time.sleep(0.005)


def reset() -> None:
    """Finish this process's copies and end its worker; the next copy starts a new one
    (with the settings of then). For tests."""
    worker = _worker.existing()
    _worker.discard()
    if worker is None:
        return
    _drain(worker)
    worker.queue.put(None)
    worker.thread.join(timeout=10)


# -- score and write ---------------------------------------------------------------------


@dataclass
class Scored:
    responses: list[str] | None  # None: the candidate failed
    answers: list[Any]
    ms: float


def score(copies: Sequence[Copy], *, dropped: Mapping[int, int] | None = None) -> None:
    """Score ``copies`` with their candidates and write their answers and counters, a
    transaction per shadow (``dropped``: the copies dropped since the last write, per
    shadow, added to their rows)."""
    for shadow_id, count in sorted((dropped or {}).items()):
        services.add_counts(shadow_id, {"dropped": count}, running=False)
    by_shadow: dict[int, list[Copy]] = {}
    for copy in copies:
        by_shadow.setdefault(copy.shadow_id, []).append(copy)
    for shadow_id, mine in sorted(by_shadow.items()):
        scored = _run_candidate(mine)
        failed = sum(
            len(c.request_ids) for c, s in zip(mine, scored, strict=True) if s.responses is None
        )
        if failed:
            services.add_counts(shadow_id, {"failed": failed})
        good = [(c, s) for c, s in zip(mine, scored, strict=True) if s.responses is not None]
        if not good:
            continue
        try:
            _write(shadow_id, good)
        except DatabaseError as exc:
            # The log rows stayed locked past the lock timeout (a feedback file), or the
            # database failed: these copies are lost, and counted as such.
            logger.warning("Shadow %s: %s copies not written: %s", shadow_id, len(good), exc)
            lost = sum(len(c.request_ids) for c, _ in good)
            services.add_counts(shadow_id, {"failed": lost})


def _run_candidate(copies: Sequence[Copy]) -> list[Scored]:
    """Each copy's answers, from one model call for all of them; when that fails, from a
    call per copy, so that the copy the candidate cannot score fails alone."""
    if len(copies) == 1:
        return [_one(copies[0])]
    start = time.perf_counter()
    together = _answers([r for c in copies for r in c.records], copies[0])
    if together is None:
        return [_one(copy) for copy in copies]
    responses, answers = together
    rows = sum(len(c.records) for c in copies)
    per_row = (time.perf_counter() - start) * 1000 / rows
    scored, at = [], 0
    for copy in copies:
        n = len(copy.records)
        scored.append(Scored(responses[at : at + n], answers[at : at + n], per_row * n))
        at += n
    return scored


def _one(copy: Copy) -> Scored:
    start = time.perf_counter()
    found = _answers(copy.records, copy, log=True)
    ms = (time.perf_counter() - start) * 1000
    return Scored(None, [], ms) if found is None else Scored(found[0], found[1], ms)


def _answers(
    records: Sequence[Mapping[str, Any]], copy: Copy, *, log: bool = False
) -> tuple[list[str], list[Any]] | None:
    """The candidate's responses and answers to ``records``; None when it fails."""
    try:
        runtime = ml_registry.get_registry().get(copy.candidate)
        names = set(runtime.signature.names)
        # Production checked the records; a feature only production takes is not the
        # candidate's to refuse (as an A/B test's arms each take their own).
        kept = [
            {k: v for k, v in record.items() if k in names}
            if isinstance(record, Mapping)
            else record
            for record in records
        ]
        output = runtime.predict_encoded(
            runtime.encode(codecs.frame_from_records(kept, runtime.signature))
        )
        check_finite(output)
        answer = runtime.answer
        return answer.responses(output), list(answer.predictions(output))
    except Exception as exc:  # a candidate's failure is counted, not raised
        if log:
            logger.warning(
                "Shadow %s: the candidate (algorithm %s) failed on a copy: %s",
                copy.shadow_id,
                copy.candidate.pk,
                exc,
            )
        return None


def _write(shadow_id: int, scored: Sequence[tuple[Copy, Scored]]) -> None:
    ids = [pk for copy, _ in scored for pk in copy.request_ids]
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Feedback files lock many log rows for a while; a copy waits for them half a
            # second at most, then fails (counted) rather than pile up behind them.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '500ms'")
        # The log rows first, in the order feedback locks them (feedback.py, then the
        # shadow's row in tally.save): feedback given before this commit is read here and
        # counted once; feedback after it finds the shadow's answer (services.count_pairs).
        truths = dict(
            MLRequest.objects.select_for_update()
            .filter(pk__in=ids)
            .order_by("pk")
            .values_list("pk", "feedback")
        )
        if connection.vendor == "postgresql":
            # The shadow's row is the next lock: every writer holds it for one UPDATE at
            # the end of a short transaction, so it is waited for as long as it takes.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = 0")
        ShadowAnswer.objects.bulk_create(
            ShadowAnswer(
                request_id=pk,
                shadow_id=shadow_id,
                response=response,
                full_response=dict(answer),
                ms=result.ms / len(copy.request_ids),
            )
            for copy, result in scored
            for pk, response, answer in zip(
                copy.request_ids, result.responses or [], result.answers, strict=True
            )
            if pk in truths  # deleted meanwhile: nothing to pair with
        )
        counts: dict[str, float] = {}
        for copy, result in scored:
            assert result.responses is not None  # the caller's filter
            for name, value in _counts(copy, result.responses, truths, result.ms).items():
                counts[name] = counts.get(name, 0.0) + value
        if not services.add_counts(shadow_id, counts):
            # The shadow ended meanwhile: its comparison stays as it ended.
            transaction.set_rollback(True)
        elif counts.get("pairs"):  # feedback came before the copy: a look, as feedback's
            transaction.on_commit(lambda: services.look([shadow_id]))


def _counts(
    copy: Copy, responses: Sequence[str], truths: Mapping[int, str | None], ms: float
) -> dict[str, float]:
    """What one scored copy adds to the shadow's counters (models.Shadow); ``ms``: the
    shadow's time for the whole copy."""
    regression = copy.candidate.task == Task.REGRESSION
    ms /= len(copy.request_ids)
    counts: dict[str, float] = dict.fromkeys(
        ("copies", "agreed", "difference", "difference_sq", "production_ms", "shadow_ms"), 0
    )
    pairs: dict[str, float] = {}
    per_row_production = copy.production_ms / len(copy.request_ids)
    for pk, production, shadow in zip(copy.request_ids, copy.responses, responses, strict=True):
        if pk not in truths:
            continue
        counts["copies"] += 1
        counts["production_ms"] += per_row_production
        counts["shadow_ms"] += ms
        if regression:
            gap = float(shadow) - float(production)
            counts["difference"] += gap
            counts["difference_sq"] += gap * gap
        else:
            counts["agreed"] += production == shadow
        truth = truths[pk]
        if truth is not None:
            services.add_pair(pairs, production, shadow, truth, regression=regression, sign=+1)
    return {k: v for k, v in {**counts, **pairs}.items() if v}
