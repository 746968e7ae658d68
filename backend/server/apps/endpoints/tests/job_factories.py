"""Batch jobs in a given state for tests, made by the code that makes them (``jobs.submit``,
``run_piece``, ``finish``, ``fail``, ``cancel``) in the test's thread, with no task sent."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.test import TestCase
from django.utils import timezone

from apps.endpoints import policy
from apps.endpoints.batch import jobs
from apps.endpoints.models import BatchJob
from apps.endpoints.tests.apis.test_batch_predict import adult_csv
from apps.endpoints.tests.factories import use_folder_storage

ROWS = 20  # three pieces of 7, 7 and 6 rows with CHUNK_ROWS
CHUNK_ROWS = 7


def use_job_storage(settings: Any, folder: Path) -> Path:
    """The ``batch_jobs`` storage in ``folder``, pieces of ``CHUNK_ROWS`` rows, no broker."""
    use_folder_storage(settings, "batch_jobs", folder)
    settings.CELERY_BROKER_URL = ""
    settings.BATCH_JOB_CHUNK_ROWS = CHUNK_ROWS
    return folder


def job_in(
    state: str,
    *,
    rows: int = ROWS,
    user: Any = None,
    log_requests: bool = False,
    finished_days_ago: float | None = None,
) -> BatchJob:
    """A job of ``rows`` Adult rows brought to ``state`` as the service brings it there:
    ``running`` has its first piece done. ``finished_days_ago`` moves its end back."""
    actor = policy.Actor(user=user or AnonymousUser(), address="127.0.0.1")
    # The tests' transaction never commits: what waits for the commit runs at once.
    with TestCase.captureOnCommitCallbacks(execute=True):
        job = jobs.submit(
            upload=io.BytesIO(adult_csv(rows).encode()),
            file_name="adult.csv",
            endpoint_name=None,
            status="production",
            version=None,
            log_requests=log_requests,
            target_column=None,
            actor=actor,
            send=lambda job_id, pieces: None,
        )
        if state in (BatchJob.State.RUNNING, BatchJob.State.SUCCEEDED):
            pieces = 1 if state == BatchJob.State.RUNNING else job.chunks_total
            for index in range(pieces):
                jobs.run_piece(job.pk, index)
            if state == BatchJob.State.SUCCEEDED:
                jobs.finish(job.pk)
        elif state == BatchJob.State.FAILED:
            jobs.run_piece(job.pk, 0)
            jobs.fail(job.pk, {"code": "invalid_input", "message": "bad cell", "line": 9})
        elif state == BatchJob.State.CANCELLED:
            jobs.cancel(job)
    if finished_days_ago is not None:
        BatchJob.objects.filter(pk=job.pk).update(
            finished_at=timezone.now() - timedelta(days=finished_days_ago)
        )
    job.refresh_from_db()
    assert job.state == state, job
    return job


def files_of(folder: Path) -> list[str]:
    """The files in the storage, relative to it, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
