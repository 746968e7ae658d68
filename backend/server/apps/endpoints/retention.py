"""Retention of the request log: rows older than ``MLREQUEST_RETENTION_DAYS`` are deleted
(``manage.py prune_requests``, and the ``prune_requests`` beat task), optionally archived
first.

- In batches (``batch_size`` rows, oldest first), each in a transaction of its own: locks
  last one batch, and predictions carry on meanwhile.
- Never a row of a running A/B test: the test is decided on them. A stopped test keeps its
  decided numbers in its summary, so its rows may go.
- Each row's feedback leaves the tally with it (``feedback.delete_requests``).
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

from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from apps.endpoints import feedback
from apps.endpoints.models import ABTest, MLRequest

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
    done = Pruned()
    started = time.monotonic()
    while True:
        # Read per batch: a test started meanwhile keeps its rows (they are new anyway).
        running = list(
            ABTest.objects.filter(state=ABTest.State.RUNNING).values_list("pk", flat=True)
        )
        old = (
            MLRequest.objects.filter(created_at__lt=cutoff)
            .exclude(ab_test_id__in=running)
            .order_by("pk")
        )
        with transaction.atomic():
            ids = list(old.values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            batch = MLRequest.objects.filter(pk__in=ids)
            if archive:
                done.archived.append(_archive(batch, ids[0], ids[-1]))
            done.deleted += feedback.delete_requests(batch)
        done.batches += 1
        done.seconds = time.monotonic() - started
        if report is not None:
            report(done)
        if pause:
            time.sleep(pause)
    done.seconds = time.monotonic() - started
    return done


def _archive(batch: QuerySet[MLRequest], first: int, last: int) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(ARCHIVE_COLUMNS)
    for row in batch.order_by("pk").values_list(
        "pk",
        "created_at",
        "parent_mlalgorithm_id",
        "ab_test_id",
        "user_id",
        "response",
        "feedback",
        "feedback_at",
        "feedback_by",
        "feedback_via",
        "input_data",
        "full_response",
    ):
        *plain, input_data, full_response = row
        writer.writerow(
            [
                *(v.isoformat() if isinstance(v, datetime) else v for v in plain),
                json.dumps(input_data, separators=(",", ":")),
                json.dumps(full_response, separators=(",", ":")),
            ]
        )
    data = gzip.compress(text.getvalue().encode(), compresslevel=6)
    name = f"mlrequests/{first:012d}-{last:012d}.csv.gz"
    store = storages["log_archive"]
    store.delete(name)  # archived before by a run that failed: replaced, not duplicated
    return store.save(name, ContentFile(data))
