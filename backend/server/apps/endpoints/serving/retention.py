"""Retention of the request log: rows older than ``MLREQUEST_RETENTION_DAYS`` are deleted
(``manage.py prune_requests``, and the ``prune_requests`` beat task), optionally archived
first; and replaced feedback values older than ``FEEDBACK_REVISION_RETENTION_DAYS``
(``prune_revisions``, by the same command and task).

- In batches (``batch_size`` rows, oldest first), each in a transaction of its own: locks
  last one batch, and predictions carry on meanwhile.
- Never a row of a running A/B test: the test is decided on them. A stopped test keeps its
  decided numbers in its summary, so its rows may go.
- Each row's feedback leaves the tally with it, in the batch's transaction.
- ``archive``: each batch is written first as a gzipped CSV to the ``log_archive``
  storage, named after its first and last ids. The file is saved before the batch's delete
  commits: a run that fails after that leaves a file whose rows are still in the log, and
  the next run archives them again (twice rather than never).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import connection, transaction
from django.utils import timezone

from apps.endpoints.models import ABTest, FeedbackRevision, MLAlgorithm, MLRequest
from apps.endpoints.serving import feedback, tally

ARCHIVE_COLUMNS = (
    "id",
    "created_at",
    "algorithm_id",
    "ab_test_id",
    "user_id",
    "response",
    "feedback",
    "feedback_at",
    "feedback_by",
    "feedback_via",
    "input_data",
    "full_response",
)


@dataclass
class Pruned:
    deleted: int = 0
    batches: int = 0
    archived: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.deleted / self.seconds if self.seconds else 0.0


def prune(
    *,
    days: int,
    batch_size: int = 10_000,
    archive: bool = False,
    pause: float = 0.0,
    report: Callable[[Pruned], None] | None = None,
    now: datetime | None = None,
) -> Pruned:
    """Delete the log rows older than ``days`` days, except those of running A/B tests."""
    if days < 1:
        raise ValueError("days must be 1 or more")
    cutoff = (now or timezone.now()) - timedelta(days=days)
    tasks = dict(MLAlgorithm.objects.values_list("pk", "task"))
    done = Pruned()
    started = time.monotonic()
    after = 0  # the highest id deleted so far: the next batch starts past it
    while True:
        # Read per batch: a test started meanwhile keeps its rows (they are new anyway).
        running = list(
            ABTest.objects.filter(state=ABTest.State.RUNNING).values_list("pk", flat=True)
        )
        with transaction.atomic():
            rows = _delete_batch(cutoff, running, batch_size, archive, after)
            if not rows:
                break
            first, after = after, max(row[0] for row in rows)
            # Their revisions, by a statement of its own: it sees a revision written while
            # the DELETE waited for a row's lock (a statement sees what was committed when
            # it started), and a later one waits for this commit and finds no row.
            feedback.delete_orphaned_revisions(first, after)
            counts = tally.Changes()
            for pk, algorithm_id, response, value, *_rest in rows:
                if value is not None:
                    counts.replace(
                        request_id=pk,
                        algorithm_id=algorithm_id,
                        response=response,
                        old=value,
                        new=None,
                        # Known at the start: the rows are older than the prune.
                        task=tasks[algorithm_id],
                    )
            tally.save(counts)
            if archive:  # saved before the delete commits: never deleted unarchived
                done.archived.append(_archive(rows))
        done.deleted += len(rows)
        done.batches += 1
        done.seconds = time.monotonic() - started
        if report is not None:
            report(done)
        if pause:
            time.sleep(pause)
    done.seconds = time.monotonic() - started
    return done


def prune_revisions(*, days: int, batch_size: int = 10_000, now: datetime | None = None) -> int:
    """Delete the feedback revisions (replaced feedback values) replaced more than
    ``days`` days ago, oldest first, ``batch_size`` per statement; how many. A revision is
    history, never counted anywhere: the current value is on the log row."""
    if days < 1:
        raise ValueError("days must be 1 or more")
    cutoff = (now or timezone.now()) - timedelta(days=days)
    old = FeedbackRevision.objects.filter(replaced_at__lt=cutoff).order_by("replaced_at")
    deleted = 0
    while ids := list(old.values_list("pk", flat=True)[:batch_size]):
        deleted += FeedbackRevision.objects.filter(pk__in=ids).delete()[0]
    return deleted


_RETURNED = "id, parent_mlalgorithm_id, response, feedback"
_ARCHIVED = (
    ", created_at, ab_test_id, user_id, feedback_at, feedback_by, feedback_via,"
    " input_data, full_response"
)


def _delete_batch(
    cutoff: datetime, running: list[int], batch_size: int, archive: bool, after: int
) -> list[tuple[Any, ...]]:
    """Delete the oldest ``batch_size`` rows before ``cutoff`` outside the running tests
    with ids above ``after``, in one statement that answers what they held (the tally's
    part, and for the archive every column).

    Two things made it fast (bench/log_scale.py: 28k rows/s before, on 10M rows): one
    statement, where selecting the rows, locking them and deleting them by id wrote each
    row twice; and starting past the last batch, where each batch walked the primary key
    from the start over every row deleted before it, dead until a vacuum."""
    table = MLRequest._meta.db_table
    params: list[Any] = [after, cutoff]
    keep = ""
    if running:
        keep = (
            f" AND (ab_test_id IS NULL OR ab_test_id NOT IN ({', '.join(['%s'] * len(running))}))"
        )
        params += running
    params.append(batch_size)
    returned = _RETURNED + (_ARCHIVED if archive else "")
    delete = (
        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE id > %s AND"
        f" created_at < %s{keep} ORDER BY id LIMIT %s) RETURNING {returned}"
    )
    with connection.cursor() as cursor:
        cursor.execute(delete, params)
        return list(cursor.fetchall())


def _archive(rows: list[tuple[Any, ...]]) -> str:
    """The deleted rows, oldest first, as gzipped CSV in the log_archive storage."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(ARCHIVE_COLUMNS)
    for row in sorted(rows, key=lambda r: r[0]):
        (pk, algorithm_id, response, value, created_at, ab_test_id, user_id, at, by, via,
         input_data, full_response) = row  # fmt: skip
        writer.writerow(
            [
                pk,
                _text(created_at),
                algorithm_id,
                ab_test_id,
                user_id,
                response,
                value,
                _text(at),
                by,
                via,
                _json(input_data),
                _json(full_response),
            ]
        )
    data = gzip.compress(text.getvalue().encode(), compresslevel=6)
    first, last = min(r[0] for r in rows), max(r[0] for r in rows)
    name = f"mlrequests/{first:012d}-{last:012d}.csv.gz"
    store = storages["log_archive"]
    store.delete(name)  # archived before by a run that failed: replaced, not duplicated
    return store.save(name, ContentFile(data))


def _text(value: Any) -> Any:
    """A time as ISO 8601 (PostgreSQL answers datetimes, SQLite text)."""
    return value.isoformat() if isinstance(value, datetime) else value


def _json(value: Any) -> str:
    """A JSON column as compact text (PostgreSQL answers it parsed, SQLite as text)."""
    if isinstance(value, str):
        return json.dumps(json.loads(value), separators=(",", ":"))
    return json.dumps(value, separators=(",", ":"))
