"""Leases on the pieces of batch jobs (``batch/leases.py``): a piece held by a live worker
is left to it, a lapsed one is claimed once and sent again, the piece that completes a job
owes its finish, a slow worker renews and is never pre-empted, and a worker paused past its
lease still cannot score its piece twice. Real workers killed mid-job:
apps/ops/tests/test_batch_job_workers.py."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from apps.endpoints.batch import jobs, leases, tasks
from apps.endpoints.models import BatchJob, BatchJobChunk, MLRequest
from apps.endpoints.tests.job_factories import job_in, use_job_storage
from apps.ml.registry import MLRegistry

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def storage(settings: Any, tmp_path: Path) -> Path:
    return use_job_storage(settings, tmp_path / "batch-jobs")


def piece(job: BatchJob, index: int) -> BatchJobChunk:
    return BatchJobChunk.objects.get(job=job, index=index)


def lapse(chunk: BatchJobChunk, seconds: float = 1) -> None:
    BatchJobChunk.objects.filter(pk=chunk.pk).update(
        lease_until=timezone.now() - timedelta(seconds=seconds)
    )


def test_a_piece_leased_to_a_live_worker_is_left_to_it_until_its_lease_lapses(
    demo_registry: MLRegistry,
) -> None:
    job = job_in(BatchJob.State.QUEUED)
    assert leases.take(piece(job, 0).pk, "elsewhere:1:abc")
    assert not jobs.run_piece(job.pk, 0)  # a second delivery, the holder alive
    held = piece(job, 0)
    assert (held.done, held.attempts, held.leased_by) == (False, 1, "elsewhere:1:abc")
    lapse(held)  # its worker gone
    assert not jobs.run_piece(job.pk, 0)  # scored now (not the last piece)
    scored = piece(job, 0)
    assert scored.done and scored.attempts == 2
    assert scored.leased_by != "elsewhere:1:abc" and scored.lease_until is None  # released


def test_a_lapsed_lease_is_claimed_once_and_again_if_the_piece_sent_again_is_lost(
    demo_registry: MLRegistry,
) -> None:
    job = job_in(BatchJob.State.QUEUED)
    never_leased, live, lost = piece(job, 0), piece(job, 1), piece(job, 2)
    assert leases.take(live.pk, "alive:1:a") and leases.take(lost.pk, "gone:2:b")
    lapse(lost)
    assert leases.claim_lapsed() == [leases.Lapsed(job.pk, 2, finish=False)]
    assert leases.claim_lapsed() == []  # claimed: another watcher does not send it too
    claimed = piece(job, 2)
    assert claimed.leased_by == "" and claimed.lease_until is not None
    assert claimed.lease_until > timezone.now()
    # The message sent again is lost too: a lease period later, it is sent once more.
    later = timezone.now() + timedelta(seconds=leases.lease_length().total_seconds() + 1)
    assert {c.piece for c in leases.claim_lapsed(now=later)} == {1, 2}  # live is lapsed now
    assert never_leased.lease_until is None  # never claimed: it waits in the queue


def test_a_piece_sent_again_is_free_to_take_though_its_claim_is_live(
    demo_registry: MLRegistry,
) -> None:
    job = job_in(BatchJob.State.QUEUED)
    assert leases.take(piece(job, 0).pk, "gone:1:a")
    lapse(piece(job, 0))
    assert [c.piece for c in leases.claim_lapsed()] == [0]
    assert not jobs.run_piece(job.pk, 0)
    assert piece(job, 0).done


def test_a_lapsed_lease_of_an_ended_job_is_not_sent_again(demo_registry: MLRegistry) -> None:
    job = job_in(BatchJob.State.QUEUED)
    assert leases.take(piece(job, 1).pk, "gone:1:a")
    jobs.cancel(job)
    lapse(piece(job, 1))
    assert leases.claim_lapsed() == []


def test_send_lapsed_sends_pieces_to_score_and_finishes_owed(
    demo_registry: MLRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(tasks.score_piece, "delay", lambda *a: calls.append(("score", *a)))
    monkeypatch.setattr(tasks.finish_job, "delay", lambda *a: calls.append(("finish", *a)))
    stalled = job_in(BatchJob.State.QUEUED)
    assert leases.take(piece(stalled, 1).pk, "gone:1:a")
    lapse(piece(stalled, 1))
    complete = job_in(BatchJob.State.QUEUED)
    assert [jobs.run_piece(complete.pk, i) for i in range(3)] == [False, False, True]
    lapse(piece(complete, 2))  # its finish_job lost with its worker
    assert tasks.send_lapsed() == 2
    assert sorted(calls) == [("finish", complete.pk), ("score", stalled.pk, 1)]


def test_the_piece_that_completes_a_job_holds_a_lease_until_the_job_is_finished(
    demo_registry: MLRegistry,
) -> None:
    job = job_in(BatchJob.State.QUEUED)
    assert [jobs.run_piece(job.pk, i) for i in range(3)] == [False, False, True]
    last = piece(job, 2)
    assert last.leased_by == leases.FINISHING and last.lease_until is not None
    later = last.lease_until + timedelta(seconds=1)
    assert leases.claim_lapsed(now=later) == [leases.Lapsed(job.pk, 2, finish=True)]
    jobs.finish(job.pk)
    assert piece(job, 2).lease_until is None
    assert leases.claim_lapsed(now=later + leases.lease_length() * 2) == []


def test_a_failed_try_releases_its_lease_so_that_the_retry_starts_at_once(
    demo_registry: MLRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = job_in(BatchJob.State.QUEUED)

    def storage_away(*args: Any) -> bytes:
        raise OSError("the storage is away")

    with monkeypatch.context() as patched:
        patched.setattr(jobs, "_piece_bytes", storage_away)
        with pytest.raises(OSError):
            jobs.run_piece(job.pk, 0)
    failed = piece(job, 0)
    assert (failed.done, failed.attempts, failed.lease_until) == (False, 1, None)
    assert not jobs.run_piece(job.pk, 0)
    assert piece(job, 0).done and piece(job, 0).attempts == 2


def test_renew_tells_a_holder_that_lost_its_lease(demo_registry: MLRegistry) -> None:
    job = job_in(BatchJob.State.QUEUED)
    chunk = piece(job, 0)
    assert leases.take(chunk.pk, "slow:1:a") and leases.renew(chunk.pk, "slow:1:a")
    lapse(chunk)
    assert leases.claim_lapsed()  # sent again while the holder was paused
    assert not leases.renew(chunk.pk, "slow:1:a")


# -- with a worker's thread: the heartbeat, and a worker paused past its lease -------------


class SlowScoring:
    """``jobs._score`` whose first call waits for ``release`` before scoring (a worker
    slow or paused), the others not; counting the calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.started, self.release = threading.Event(), threading.Event()
        original = jobs._score

        def slow(*args: Any) -> Any:
            self.calls += 1
            if self.calls == 1:
                self.started.set()
                assert self.release.wait(30)
            return original(*args)

        monkeypatch.setattr(jobs, "_score", slow)


def in_thread(function: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(function(*args))
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


@pytest.mark.django_db(transaction=True)
def test_a_slow_worker_renews_its_lease_and_is_never_pre_empted(
    demo_registry: MLRegistry, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.BATCH_JOB_LEASE_SECONDS, settings.BATCH_JOB_HEARTBEAT_SECONDS = 1, 0.2
    job = job_in(BatchJob.State.QUEUED)
    scoring = SlowScoring(monkeypatch)
    worker, result = in_thread(jobs.run_piece, job.pk, 0)
    try:
        assert scoring.started.wait(30)
        deadline = time.monotonic() + 3  # three lease lengths
        while time.monotonic() < deadline:
            assert leases.claim_lapsed() == []
            assert not jobs.run_piece(job.pk, 0)  # a second delivery leaves it alone
            time.sleep(0.1)
        assert scoring.calls == 1
        assert piece(job, 0).lease_until is not None  # renewed all along
    finally:
        scoring.release.set()
        worker.join(30)
    assert result == [False]
    done = piece(job, 0)
    assert done.done and done.attempts == 1 and done.lease_until is None


@pytest.mark.django_db(transaction=True)
def test_a_worker_paused_past_its_lease_does_not_score_its_piece_twice(
    demo_registry: MLRegistry, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No heartbeat within the test: the worker is as good as frozen.
    settings.BATCH_JOB_LEASE_SECONDS, settings.BATCH_JOB_HEARTBEAT_SECONDS = 1, 600
    # With log_requests a piece is scored inside its transaction, which on SQLite holds the
    # only write lock (BEGIN IMMEDIATE): nobody else could score it meanwhile. The logged
    # case runs on PostgreSQL (CI runs both).
    logged = connection.vendor != "sqlite"
    job = job_in(BatchJob.State.QUEUED, log_requests=logged)
    scoring = SlowScoring(monkeypatch)
    frozen, result = in_thread(jobs.run_piece, job.pk, 0)
    try:
        assert scoring.started.wait(30)
        time.sleep(1.1)
        assert [c.piece for c in leases.claim_lapsed()] == [0]
        assert not jobs.run_piece(job.pk, 0)  # the copy sent again: scored and committed
        assert piece(job, 0).done
        scoring.release.set()  # the frozen worker wakes up, scores, and finds it done
    finally:
        scoring.release.set()
        frozen.join(30)
    assert result == [False]
    assert scoring.calls == 2  # both scored; only one wrote (and logged) it
    job.refresh_from_db()
    done = piece(job, 0)
    assert (job.chunks_done, job.rows_done, done.rows, done.attempts) == (1, 7, 7, 2)
    if logged:
        assert sum(b - a + 1 for a, b in done.request_ranges) == 7
    assert MLRequest.objects.count() == (7 if logged else 0)
