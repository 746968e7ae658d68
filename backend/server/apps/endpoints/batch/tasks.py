"""The tasks of batch jobs (``jobs.py``), for Celery workers (``make worker``).

With ``CELERY_BROKER_URL`` each piece of a job is a task of its own, so N workers on N
machines score one file together. Tasks are acknowledged after they ran
(``CELERY_TASK_ACKS_LATE``): a worker killed mid-piece leaves the message to another, and
the piece, idempotent, is scored once. A piece that fails for a reason other than its
content is tried again, ``BATCH_JOB_MAX_RETRIES`` times, then the job fails.

A worker lost for good (killed, its machine gone) is noticed by its lease (``leases``):
the piece it was scoring stops being renewed, and every worker looks every
``BATCH_JOB_HEARTBEAT_SECONDS`` for lapsed leases and sends those pieces again
(``WatchLeases``), whatever the broker does with the lost worker's message (Redis gives it
back only after its visibility timeout, 600 s).

Each time a worker connects to the broker (its start, a reconnect), it sends
``resume_stalled`` for every unfinished job (``ResumeOnConnect``): a broker restarted
without its data lost the queue, pieces not started included.

Without a broker (the embedded default of ``make run``) the web process runs the same
functions itself, on a thread of its own, one piece after the other.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from celery import Task, bootsteps, shared_task
from django.conf import settings
from django.db import connection
from django.db.models import F
from django.utils import timezone

from apps.core.errors import PieceRefused
from apps.endpoints.batch import jobs, leases
from apps.endpoints.models import BatchJob

logger = logging.getLogger(__name__)


def send_pieces(job_id: int, count: int) -> None:
    """Queue every piece of a job (after its commit: ``jobs.submit``'s ``send``)."""
    if settings.CELERY_BROKER_URL:
        for index in range(count):
            score_piece.delay(job_id, index)
    else:
        _embedded().submit(_run_embedded, job_id, count)


def attempt(job_id: int, index: int, tries: int) -> bool | None:
    """One try at a piece: whether the job is now complete; None when the piece should be
    tried again (a failure that is not its content's), after ``tries`` earlier tries."""
    try:
        return jobs.run_piece(job_id, index)
    except PieceRefused as exc:  # its content: the same answer every time
        jobs.fail(job_id, jobs.error_of(exc))
        return False
    except Exception as exc:
        if tries >= settings.BATCH_JOB_MAX_RETRIES:
            logger.exception("Batch job %s, piece %s failed %s times", job_id, index, tries + 1)
            jobs.fail(
                job_id,
                {
                    "code": "piece_failed",
                    "message": f"Piece {index} failed {tries + 1} times: "
                    f"{type(exc).__name__}: {exc}",
                },
            )
            return False
        logger.warning("Batch job %s, piece %s: %s; trying again.", job_id, index, exc)
        return None


# Every task keeps the name it had when this module was apps/endpoints/tasks.py: queued
# messages and the beat's entries name tasks, and a rolling upgrade must still find them.
_NAMES = "apps.endpoints.tasks"


@shared_task(
    name=f"{_NAMES}.score_piece",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def score_piece(self: Task, job_id: int, index: int) -> None:
    tries = self.request.retries
    complete = attempt(job_id, index, tries)
    if complete is None:
        raise self.retry(countdown=min(2**tries, 60), max_retries=None)
    if complete:
        finish_job.delay(job_id)


@shared_task(
    name=f"{_NAMES}.finish_job", acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def finish_job(job_id: int) -> None:
    jobs.finish(job_id)


@shared_task(name=f"{_NAMES}.resume_stalled", ignore_result=True)
def resume_stalled(minutes: int = 10) -> int:
    """Send again the pieces of jobs unfinished after ``minutes`` (a broker that lost its
    queue); a piece still queued then runs twice, and the second run finds it done. A job
    whose pieces are all done but that is still running lost its ``finish_job``: sent."""
    sent = 0
    for job_id, index in jobs.unfinished_pieces(timedelta(minutes=minutes)):
        score_piece.delay(job_id, index)
        sent += 1
    unfinished = BatchJob.objects.filter(
        state=BatchJob.State.RUNNING,
        chunks_done=F("chunks_total"),
        created_at__lt=timezone.now() - timedelta(minutes=minutes),
    )
    for job_id in unfinished.values_list("pk", flat=True):
        finish_job.delay(job_id)
        sent += 1
    return sent


class ResumeOnConnect(bootsteps.StartStopStep):  # type: ignore[misc]  # Celery is untyped
    """A step of the worker's consumer, started on each connection to the broker (the
    worker's start, a reconnect): sends ``resume_stalled`` for every unfinished job.
    Added to the worker by ``server/celery.py``."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, consumer: Any) -> None:
        resume_stalled.delay(minutes=0)


def send_lapsed() -> int:
    """Send again what lost its worker: pieces, and finishes, whose lease lapsed."""
    lapsed = leases.claim_lapsed()
    for job_id, index, finish in lapsed:
        if finish:
            finish_job.delay(job_id)
        else:
            score_piece.delay(job_id, index)
    return len(lapsed)


def watch_leases(stop: threading.Event) -> None:
    """Until ``stop``: ``send_lapsed`` every ``BATCH_JOB_HEARTBEAT_SECONDS``."""
    try:
        while not stop.wait(settings.BATCH_JOB_HEARTBEAT_SECONDS):
            try:
                send_lapsed()
            except Exception:  # the database or the broker away: look again next time
                logger.exception("Could not look for lapsed leases")
                connection.close()
    finally:
        connection.close()  # this thread's own


class WatchLeases(bootsteps.StartStopStep):  # type: ignore[misc]  # Celery is untyped
    """A step of the worker's consumer: a thread of the worker's main process that runs
    ``watch_leases``, one per worker whatever its pool (the beat is optional, and a timer
    in every worker means no single one to lose). Added by ``server/celery.py``."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, consumer: Any) -> None:
        if self.thread is None or not self.thread.is_alive():  # a reconnect starts it again
            self.stopping.clear()
            self.thread = threading.Thread(
                target=watch_leases, args=(self.stopping,), name="lease-watch", daemon=True
            )
            self.thread.start()

    def shutdown(self, consumer: Any) -> None:
        self.stopping.set()


@shared_task(name=f"{_NAMES}.delete_old_jobs", ignore_result=True)
def delete_old_jobs() -> int:
    return jobs.delete_old(settings.BATCH_JOB_RETENTION_DAYS)


# -- the embedded default: no broker, the web process runs the jobs -----------------------

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def drain() -> None:
    """Wait until the embedded runner has run everything sent so far (tests)."""
    _embedded().submit(lambda: None).result()


def _embedded() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-jobs")
        return _executor


def _run_embedded(job_id: int, count: int) -> None:
    try:
        for index in range(count):
            tries = 0
            while (complete := attempt(job_id, index, tries)) is None:
                time.sleep(min(2**tries, 60))
                tries += 1
            if complete:
                jobs.finish(job_id)
            if not jobs.unfinished(job_id):  # cancelled or failed: nothing more to do
                break
    except Exception:  # a thread's error would otherwise vanish
        logger.exception("Batch job %s stopped", job_id)
    finally:
        connection.close()  # this thread's own
