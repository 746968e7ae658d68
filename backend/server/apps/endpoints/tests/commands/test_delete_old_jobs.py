"""``manage.py delete_old_jobs``, the daily task and its beat schedule: jobs that ended long
ago go with their files; recent and unfinished ones stay."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.endpoints.batch import tasks
from apps.endpoints.models import BatchJob, MLRequest
from apps.endpoints.tests.job_factories import files_of, job_in, use_job_storage
from apps.ml.registry import MLRegistry

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def job_storage(settings: Any, tmp_path: Path) -> Path:
    return use_job_storage(settings, tmp_path / "batch-jobs")


def delete_old_jobs(*args: str) -> str:
    out = io.StringIO()
    call_command("delete_old_jobs", *args, stdout=out)
    return out.getvalue()


def test_jobs_that_ended_long_ago_go_with_their_files_and_the_others_stay(
    demo_registry: MLRegistry, job_storage: Path, settings: Any
) -> None:
    settings.BATCH_JOB_RETENTION_DAYS = 7
    old = [
        job_in("succeeded", finished_days_ago=8, log_requests=True),
        job_in("failed", finished_days_ago=30),
        job_in("cancelled", finished_days_ago=7.01),
    ]
    recent = [job_in("succeeded", finished_days_ago=6.9), job_in("failed", finished_days_ago=1)]
    unfinished = [job_in("queued"), job_in("running")]
    long_ago = timezone.now() - timedelta(days=60)  # unfinished however old: not retention's
    BatchJob.objects.filter(pk__in=[j.pk for j in unfinished]).update(created_at=long_ago)
    # a piece's output that a failed deletion left behind goes too
    leftover = job_storage / "jobs" / str(old[1].pk) / "pieces" / "000000.csv"
    leftover.write_text("age\n1\n")
    old[1].chunks.filter(index=0).update(output_name=f"jobs/{old[1].pk}/pieces/000000.csv")
    assert MLRequest.objects.count() == 20

    assert delete_old_jobs() == "Deleted 3 batch jobs that ended more than 7 days ago.\n"
    kept = [*recent, *unfinished]
    assert sorted(BatchJob.objects.values_list("pk", flat=True)) == sorted(j.pk for j in kept)
    expected = [
        f"jobs/{recent[0].pk}/result.csv",
        unfinished[0].input_name,
        unfinished[1].input_name,
        f"jobs/{unfinished[1].pk}/pieces/000000.csv",  # the running job's first piece
    ]
    assert files_of(job_storage) == sorted(expected)
    assert not any((job_storage / "jobs" / str(job.pk)).exists() for job in old)  # folders
    assert MLRequest.objects.count() == 20  # a succeeded job's rows were served: they stay
    assert delete_old_jobs() == "Deleted 0 batch jobs that ended more than 7 days ago.\n"


def test_days_can_be_given_and_must_not_be_negative(
    demo_registry: MLRegistry, job_storage: Path
) -> None:
    job_in("succeeded", finished_days_ago=2)
    kept = job_in("failed", finished_days_ago=0.5)
    assert delete_old_jobs("--days", "1") == "Deleted 1 batch job that ended more than 1 day ago.\n"
    assert list(BatchJob.objects.values_list("pk", flat=True)) == [kept.pk]
    with pytest.raises(CommandError, match="0 or more"):
        delete_old_jobs("--days", "-1")
    assert delete_old_jobs("--days", "0").startswith("Deleted 1 batch job ")
    assert files_of(job_storage) == []


def test_the_task_keeps_batch_job_retention_days(demo_registry: MLRegistry, settings: Any) -> None:
    job_in("succeeded", finished_days_ago=3)
    settings.BATCH_JOB_RETENTION_DAYS = 4
    assert tasks.delete_old_jobs() == 0
    settings.BATCH_JOB_RETENTION_DAYS = 2
    assert tasks.delete_old_jobs() == 1 and not BatchJob.objects.exists()


def test_the_beat_sends_retention_daily(settings: Any) -> None:
    from celery.schedules import crontab

    from server.celery import app

    app.loader.import_default_modules()
    schedule = {
        entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()
    }
    assert set(schedule) == {
        "apps.endpoints.tasks.delete_old_jobs",
        "apps.endpoints.tasks.prune_requests",  # the request log's (test_prune_requests.py)
    }
    assert set(schedule) <= set(app.tasks)
    daily = schedule["apps.endpoints.tasks.delete_old_jobs"]
    assert isinstance(daily, crontab) and daily.hour == {3} and daily.minute == {30}
    pruning = schedule["apps.endpoints.tasks.prune_requests"]
    assert isinstance(pruning, crontab) and pruning.hour == {3} and pruning.minute == {45}
