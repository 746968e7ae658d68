"""Leases on the pieces of batch jobs: who is scoring a piece, and until when.

A piece being scored holds a lease in the database (``BatchJobChunk.leased_by`` and
``lease_until``) that its worker renews every ``BATCH_JOB_HEARTBEAT_SECONDS`` from a
thread of its own, for ``BATCH_JOB_LEASE_SECONDS``. A piece whose lease lapsed lost its
worker (killed, its machine gone, cut off from the database): ``claim_lapsed`` finds it,
and whoever claims it first sends it again (``tasks.WatchLeases``, a timer in every
worker). That is independent of the broker: Redis gives an unacknowledged task back only
after its visibility timeout (600 s), and lowering that would send long pieces twice.

- A delivery of a piece whose lease is live (RabbitMQ gives a dead worker's task back at
  once, ``resume_stalled`` sends every unfinished piece) does nothing: the holder, or the
  watcher once the holder is gone, sees it through. A slow worker keeps renewing, so it is
  never pre-empted.
- The lease is a hint, not the guard: a piece is still marked done in the transaction that
  writes its output, under a row lock, so a worker paused past its lease (and its piece
  sent again meanwhile) cannot score it twice.
- The piece that completes its job keeps a lease held by ``FINISHING`` until the job is
  finished: a ``finish_job`` lost with its worker lapses like a piece and is sent again.
- ``leased_by`` is empty for a piece sent again by the watcher (its lease then bounds how
  long that message may take to start before it is sent once more), and stays set to the
  last holder otherwise, for whoever looks at a stuck job.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import F, Q
from django.utils import timezone

from apps.endpoints.models import BatchJob, BatchJobChunk

logger = logging.getLogger(__name__)

FINISHING = "finishing"  # the holder of a done piece whose job still has to be finished
_CLAIM_BATCH = 100


class Lapsed(NamedTuple):
    """A claimed piece to send again; ``finish`` when what is owed is the job's finish."""

    job_id: int
    piece: int
    finish: bool


def holder() -> str:
    """A name for one attempt at a piece: the host and process (for whoever looks at a
    stuck job) and a random part, so that two attempts in one process differ."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def lease_length() -> timedelta:
    return timedelta(seconds=settings.BATCH_JOB_LEASE_SECONDS)


def take(chunk_id: int, by: str) -> bool:
    """Lease the piece to ``by`` unless it is done or someone else holds a live lease;
    whether it did. Counts the attempt."""
    now = timezone.now()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(leased_by="")
    taken = BatchJobChunk.objects.filter(free, pk=chunk_id, done=False).update(
        leased_by=by, lease_until=now + lease_length(), attempts=F("attempts") + 1
    )
    return bool(taken)


def renew(chunk_id: int, by: str) -> bool:
    """Extend ``by``'s lease; whether it still held it."""
    renewed = BatchJobChunk.objects.filter(pk=chunk_id, leased_by=by).update(
        lease_until=timezone.now() + lease_length()
    )
    return bool(renewed)


def release(chunk_id: int, by: str) -> None:
    """End ``by``'s lease (the piece is done, or failed and will be tried again: its retry
    need not wait for the lease to lapse). The holder's name stays, for the record."""
    BatchJobChunk.objects.filter(pk=chunk_id, leased_by=by).update(lease_until=None)


@contextmanager
def holding(chunk_id: int, by: str) -> Iterator[None]:
    """Renew ``by``'s lease every ``BATCH_JOB_HEARTBEAT_SECONDS`` while the block runs,
    from a thread of its own (with a database connection of its own), then release it."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.BATCH_JOB_HEARTBEAT_SECONDS):
                try:
                    if not renew(chunk_id, by):
                        # Paused past its lease and sent again: the done check decides.
                        logger.warning("Lost the lease of piece %s (%s)", chunk_id, by)
                        return
                except DatabaseError as exc:  # try again at the next beat
                    logger.warning("Could not renew the lease of piece %s: %s", chunk_id, exc)
        finally:
            connection.close()  # this thread's own

    thread = threading.Thread(target=beat, name=f"lease-{chunk_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        release(chunk_id, by)


def hold_for_finish(chunk: BatchJobChunk) -> None:
    """Set on the piece that completes its job, in the transaction that marks it done:
    the job's finish is owed, and ``claim_lapsed`` sends it again if it is lost."""
    chunk.leased_by = FINISHING
    chunk.lease_until = timezone.now() + lease_length()


def claim_lapsed(now: datetime | None = None) -> list[Lapsed]:
    """Pieces of unfinished jobs whose lease lapsed, each claimed for a new lease period
    by a conditional update (so of many workers watching, one sends it): the caller sends
    them again. Pieces never leased are not here: they wait in the broker's queue."""
    now = now or timezone.now()
    owed = Q(done=False) | Q(leased_by=FINISHING)
    lapsed = list(  # read to the end before the updates: SQLite would hold a read lock
        BatchJobChunk.objects.filter(
            owed,
            lease_until__lt=now,
            job__state__in=[BatchJob.State.QUEUED, BatchJob.State.RUNNING],
        )
        .order_by("lease_until")
        .values_list("pk", "job_id", "index", "leased_by", "lease_until")[:_CLAIM_BATCH]
    )
    claimed = []
    for pk, job_id, index, by, until in lapsed:
        finish = by == FINISHING
        # Still as seen: nobody renewed, took or claimed it since.
        won = BatchJobChunk.objects.filter(pk=pk, leased_by=by, lease_until=until).update(
            leased_by=FINISHING if finish else "", lease_until=now + lease_length()
        )
        if won:
            logger.warning(
                "Batch job %s: %s lapsed (held by %s); sending it again",
                job_id,
                "its finish" if finish else f"piece {index}",
                by or "a message sent again",
            )
            claimed.append(Lapsed(job_id, index, finish))
    return claimed
