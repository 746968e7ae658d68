"""``tasks.resume_stalled``, the sweep a worker sends each time it connects to the broker
(``tasks.ResumeOnConnect``): the pieces of unfinished jobs sent again, and a job whose
pieces are all done but that never got its ``finish_job`` finished. The tasks it sends are
recorded here, not sent (apps/ops/tests/test_batch_job_workers.py runs real workers)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import TestCase

from apps.endpoints import policy
from apps.endpoints.batch import jobs, tasks
from apps.endpoints.models import BatchJob
from apps.endpoints.tests.apis.test_batch_predict import adult_csv
from apps.endpoints.tests.factories import use_folder_storage
from apps.ml.registry import MLRegistry
from server.celery import app

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    use_folder_storage(settings, "batch_jobs", tmp_path / "batch-jobs")
    settings.BATCH_JOB_CHUNK_ROWS = 4
    calls: list[Any] = []
    for task in (tasks.score_piece, tasks.finish_job):
        name = task.name.rsplit(".", 1)[1]
        monkeypatch.setattr(task, "delay", lambda *a, _n=name: calls.append((_n, *a)))
    return calls


def submitted(rows: int) -> BatchJob:
    with TestCase.captureOnCommitCallbacks(execute=True):
        return jobs.submit(
            upload=io.BytesIO(adult_csv(rows).encode()),
            file_name="adult.csv",
            endpoint_name=None,
            status="production",
            version=None,
            log_requests=False,
            target_column=None,
            actor=policy.Actor(user=AnonymousUser(), address="127.0.0.1"),
            send=lambda job_id, pieces: None,
        )


def test_pieces_not_done_are_sent_again_and_a_complete_job_is_finished(
    demo_registry: MLRegistry, sent: list[Any]
) -> None:
    waiting = submitted(8)  # two pieces, none done
    started = submitted(8)
    assert not jobs.run_piece(started.pk, 0)
    complete = submitted(8)  # its last piece done, its finish_job lost
    assert not jobs.run_piece(complete.pk, 0) and jobs.run_piece(complete.pk, 1)
    finished = submitted(4)
    assert jobs.run_piece(finished.pk, 0)
    jobs.finish(finished.pk)

    assert tasks.resume_stalled(minutes=0) == 4
    assert sorted(sent) == [
        ("finish_job", complete.pk),
        ("score_piece", waiting.pk, 0),
        ("score_piece", waiting.pk, 1),
        ("score_piece", started.pk, 1),
    ]
    sent.clear()
    assert tasks.resume_stalled() == 0 and sent == []  # the default: jobs 10 minutes old


def test_every_worker_sends_the_sweep_when_it_connects() -> None:
    from kombu.utils.imports import symbol_by_name

    # server/celery.py names the step (it loads before the apps); the worker resolves it.
    steps = {symbol_by_name(step) for step in app.steps["consumer"]}  # type: ignore[no-untyped-call]
    assert tasks.ResumeOnConnect in steps
