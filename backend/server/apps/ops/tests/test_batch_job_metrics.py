"""/metrics for batch jobs: jobs by state and the pieces waiting, read at scrape time from
the jobs' table; rows scored, counted as pieces are committed."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.db import OperationalError
from rest_framework.test import APIClient

from apps.endpoints.batch import jobs
from apps.endpoints.models import BatchJob, BatchJobChunk
from apps.endpoints.tests.job_factories import job_in, use_job_storage
from apps.ml.registry import MLRegistry
from apps.ops.tests.test_metrics import scrape, value

pytestmark = pytest.mark.django_db
STATES = ["queued", "running", "succeeded", "failed", "cancelled"]


@pytest.fixture(autouse=True)
def job_storage(settings: Any, tmp_path: Path) -> Path:
    return use_job_storage(settings, tmp_path / "batch-jobs")


def by_state(samples: dict[Any, float]) -> dict[str, float]:
    return {
        dict(labels)["state"]: number
        for (name, labels), number in samples.items()
        if name == "ml_batch_jobs"
    }


def test_jobs_are_counted_by_state_and_every_state_is_there(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    assert by_state(scrape(api)) == dict.fromkeys(STATES, 0)
    for state in [*STATES, "queued", "succeeded", "succeeded"]:
        job_in(state)
    expected = {"queued": 2, "running": 1, "succeeded": 3, "failed": 1, "cancelled": 1}
    assert by_state(scrape(api)) == expected


def test_the_pieces_waiting_are_those_not_done_of_queued_and_running_jobs(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    assert scrape(api)[("ml_batch_job_pieces_waiting", ())] == 0
    for state in STATES:  # 3 pieces each: 3 waiting for the queued job, 2 for the running
        job_in(state)
    job_in("queued", rows=50)  # 8 pieces
    waiting = BatchJobChunk.objects.filter(
        done=False, job__state__in=[BatchJob.State.QUEUED, BatchJob.State.RUNNING]
    ).count()
    assert waiting == 3 + 2 + 8
    assert scrape(api)[("ml_batch_job_pieces_waiting", ())] == waiting


def test_rows_scored_by_jobs_are_counted_by_endpoint_once_their_piece_is_committed(
    demo_registry: MLRegistry, django_capture_on_commit_callbacks: Any
) -> None:
    labels = {"endpoint": "income_classifier"}
    before = value("ml_batch_job_rows_total", **labels)
    job = job_in("queued")
    with django_capture_on_commit_callbacks(execute=False) as waiting:
        assert jobs.run_piece(job.pk, 0) is False
    assert value("ml_batch_job_rows_total", **labels) == before  # not before the commit
    for callback in waiting:
        callback()
    assert value("ml_batch_job_rows_total", **labels) == before + 7
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.run_piece(job.pk, 0) is False  # delivered twice: nothing more
        jobs.run_piece(job.pk, 1)
        assert jobs.run_piece(job.pk, 2) is True
    assert value("ml_batch_job_rows_total", **labels) == before + 20
    cancelled = job_in("cancelled")
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.run_piece(cancelled.pk, 0) is False
    assert value("ml_batch_job_rows_total", **labels) == before + 20


def test_a_scrape_reads_the_jobs_in_one_query_and_never_their_pieces(
    api: APIClient, demo_registry: MLRegistry, django_assert_num_queries: Any
) -> None:
    for state in STATES:
        job_in(state)
    # The feedback tally; the jobs, twice; the running sequential A/B tests, the running
    # shadows and the serving versions with a drift reference (none: one query each).
    with django_assert_num_queries(6) as queries:
        samples = scrape(api)
    sql = [q["sql"] for q in queries.captured_queries]
    assert "endpoints_batchjob" in sql[1] and "GROUP BY" in sql[1]
    assert "endpoints_batchjob" in sql[2] and "IN ('queued', 'running')" in sql[2]
    assert not any("endpoints_batchjobchunk" in s or "endpoints_mlrequest" in s for s in sql)
    assert samples[("ml_batch_job_pieces_waiting", ())] == 5


def test_a_scrape_still_answers_without_the_job_metrics_while_the_database_is_down(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    failing = mock.patch(
        "apps.ops.metrics.BatchJob.objects.order_by", side_effect=OperationalError("down")
    )
    with failing:
        samples = scrape(api)
    names = {name for name, _ in samples}
    assert not names & {"ml_batch_jobs", "ml_batch_job_pieces_waiting"}
    assert "python_info" in names  # the rest is there
