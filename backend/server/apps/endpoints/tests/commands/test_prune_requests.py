"""Retention of the request log: old rows go in batches, a running A/B test's stay, the
tally follows, and the archive holds what was deleted."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import storages
from django.core.management import CommandError, call_command
from django.db.models import Q
from django.utils import timezone

from apps.endpoints.models import ABTest, FeedbackRevision, MLAlgorithm, MLRequest
from apps.endpoints.serving import retention, tasks
from apps.endpoints.serving.selectors import feedback_counts, feedback_counts_by_scan
from apps.endpoints.tests.factories import log_rows, use_folder_storage

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def archive_folder(settings: Any, tmp_path: Path) -> Path:
    return use_folder_storage(settings, "log_archive", tmp_path / "log-archive")


def aged(rows: list[MLRequest], days: int) -> list[int]:
    ids = [r.pk for r in rows]
    MLRequest.objects.filter(pk__in=ids).update(created_at=timezone.now() - timedelta(days=days))
    return ids


@pytest.fixture
def grown(two: tuple[MLAlgorithm, MLAlgorithm]) -> dict[str, Any]:
    forest, trees = two
    running = ABTest.objects.create(
        title="running", created_by="t", parent_mlalgorithm_1=forest, parent_mlalgorithm_2=trees
    )
    stopped = ABTest.objects.create(
        title="stopped",
        created_by="t",
        parent_mlalgorithm_1=forest,
        parent_mlalgorithm_2=trees,
        state=ABTest.State.STOPPED,
        ended_at=timezone.now(),
    )
    old = aged(log_rows(forest, 23), 40)
    old_answered = aged(log_rows(trees, 4, feedback=">50K"), 40)
    old_of_running = aged(log_rows(forest, 3, ab_test=running), 40)
    old_of_stopped = aged(log_rows(trees, 2, ab_test=stopped), 40)
    recent = [r.pk for r in log_rows(forest, 5)]
    FeedbackRevision.objects.create(request_id=old_answered[0], feedback="<=50K")
    call_command("recount_feedback", stdout=io.StringIO())  # the rows above skipped the tally
    return {
        "gone": {*old, *old_answered, *old_of_stopped},
        "kept": {*old_of_running, *recent},
        "answered": old_answered,
    }


def test_old_rows_go_in_batches_and_a_running_tests_rows_stay(grown: dict[str, Any]) -> None:
    tallied = {c.algorithm_id: c.given for c in feedback_counts()}
    seen: list[int] = []
    done = retention.prune(days=30, batch_size=10, report=lambda d: seen.append(d.deleted))
    assert done.deleted == len(grown["gone"]) == 29
    assert seen == [10, 20, 29] and done.batches == 3  # one transaction per batch
    assert set(MLRequest.objects.values_list("pk", flat=True)) == grown["kept"]
    assert not FeedbackRevision.objects.exists()
    # The four answered rows left the tally with them: it matches a count of the log again.
    after = {c.algorithm_id: c.given for c in feedback_counts()}
    by_scan = {c.algorithm_id: c.given for c in feedback_counts_by_scan()}
    assert sum(tallied.values()) - sum(after.values()) == 4
    assert {k: v for k, v in after.items() if v} == {k: v for k, v in by_scan.items() if v}
    assert retention.prune(days=30).deleted == 0  # nothing left to do


def test_the_archive_holds_every_deleted_row_once(
    grown: dict[str, Any], archive_folder: Path
) -> None:
    expected = {r.pk: r for r in MLRequest.objects.filter(pk__in=grown["gone"]).select_related()}
    done = retention.prune(days=30, batch_size=12, archive=True)
    assert len(done.archived) == 3
    rows: list[dict[str, str]] = []
    for name in done.archived:
        with storages["log_archive"].open(name, "rb") as stored:
            text = gzip.decompress(stored.read()).decode()
        rows += csv.DictReader(io.StringIO(text))
    assert sorted(int(r["id"]) for r in rows) == sorted(grown["gone"])
    for row in rows:
        original = expected[int(row["id"])]
        assert json.loads(row["input_data"]) == original.input_data
        assert row["feedback"] == (original.feedback or "")
        assert int(row["algorithm_id"]) == original.parent_mlalgorithm_id


def test_the_command_and_the_beat_task_follow_the_setting(
    grown: dict[str, Any], settings: Any
) -> None:
    settings.MLREQUEST_RETENTION_DAYS = 0
    settings.FEEDBACK_REVISION_RETENTION_DAYS = 0
    with pytest.raises(CommandError, match="keeps every row"):
        call_command("prune_requests")
    assert tasks.prune_requests() == 0  # 0: keep everything
    assert MLRequest.objects.count() == 37
    settings.MLREQUEST_RETENTION_DAYS = 60
    assert tasks.prune_requests() == 0  # nothing is 60 days old
    out = io.StringIO()
    call_command("prune_requests", "--days", "30", "--batch-size", "20", stdout=out)
    assert "batch 2: 29 rows deleted so far" in out.getvalue()
    assert "Deleted 29 requests older than 30 days" in out.getvalue()
    assert not MLRequest.objects.filter(~Q(pk__in=grown["kept"])).exists()


def test_old_feedback_revisions_go_and_recent_ones_stay_whatever_the_logs_retention(
    two: tuple[MLAlgorithm, MLAlgorithm], settings: Any
) -> None:
    forest, _ = two
    rows = log_rows(forest, 3, feedback=">50K")
    for days, row in zip((100, 91, 10), rows, strict=True):
        for n in range(3):
            revision = FeedbackRevision.objects.create(request=row, feedback=f"v{n}")
            FeedbackRevision.objects.filter(pk=revision.pk).update(
                replaced_at=timezone.now() - timedelta(days=days)
            )
    settings.MLREQUEST_RETENTION_DAYS = 0  # every log row is kept
    settings.FEEDBACK_REVISION_RETENTION_DAYS = 90
    assert retention.prune_revisions(days=90, batch_size=2) == 6  # in three statements
    assert set(FeedbackRevision.objects.values_list("request_id", flat=True)) == {rows[2].pk}
    FeedbackRevision.objects.filter(request=rows[2]).update(
        replaced_at=timezone.now() - timedelta(days=95)
    )
    assert tasks.prune_requests() == 3  # the beat's task: revisions, no log rows
    assert MLRequest.objects.count() == 3 and not FeedbackRevision.objects.exists()
    FeedbackRevision.objects.create(request=rows[0], feedback="old")
    FeedbackRevision.objects.update(replaced_at=timezone.now() - timedelta(days=40))
    out = io.StringIO()
    call_command("prune_requests", "--revision-days", "30", stdout=out)
    assert "Deleted 1 feedback revisions replaced more than 30 days ago" in out.getvalue()
    assert "Kept every request (MLREQUEST_RETENTION_DAYS is 0)" in out.getvalue()
    assert MLRequest.objects.count() == 3 and not FeedbackRevision.objects.exists()


def test_no_foreign_key_makes_the_database_check_each_deleted_row(
    grown: dict[str, Any],
) -> None:
    """A foreign key into the log makes PostgreSQL (and SQLite's foreign key checks) look
    up the referencing table once per deleted row: 57 % of a retention batch's time. The
    revisions keep their link in Django only, and every delete takes them itself (the
    tests above, the admin's in test_admin)."""
    from django.db import connection

    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
        referencing = [
            (table, column)
            for table in tables
            for column, (_, target) in connection.introspection.get_relations(cursor, table).items()
            if target == MLRequest._meta.db_table
        ]
    assert referencing == []
    # the link is still there for the ORM: a revision knows its request
    [revision] = FeedbackRevision.objects.select_related("request")
    assert revision.request.pk == grown["answered"][0]


@pytest.mark.django_db(transaction=True)
def test_a_revision_written_while_a_batch_waits_for_its_row_goes_with_the_row(
    two: tuple[MLAlgorithm, MLAlgorithm],
) -> None:
    """Regression (review): on PostgreSQL the batch deleted the revisions in the same
    statement as the rows, under one snapshot. Feedback that held an old row's lock, and
    wrote a revision while the batch waited for that lock, left its revision behind; the
    database's foreign key, since dropped, used to refuse that batch instead."""
    import threading

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("row locks and snapshots as PostgreSQL has them")
    forest, _ = two
    [old] = aged(log_rows(forest, 1, feedback=">50K"), 40)
    locked, release = threading.Event(), threading.Event()

    def feedback_holding_the_row() -> None:
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute(
                    f"SELECT id FROM {MLRequest._meta.db_table} WHERE id = %s FOR UPDATE", [old]
                )
                locked.set()
                release.wait(10)
                cursor.execute(
                    f"INSERT INTO {FeedbackRevision._meta.db_table}"
                    " (request_id, feedback, given_by, given_via, replaced_at)"
                    " VALUES (%s, '>50K', 'someone', 'token', now())",
                    [old],
                )
                cursor.execute("COMMIT")
        finally:
            other.close()

    holder = threading.Thread(target=feedback_holding_the_row)
    holder.start()
    assert locked.wait(10)
    threading.Timer(0.5, release.set).start()  # the prune is waiting for the row by then
    done = retention.prune(days=30)
    holder.join(10)
    assert done.deleted == 1
    assert not MLRequest.objects.filter(pk=old).exists()
    assert not FeedbackRevision.objects.filter(request_id=old).exists()


def test_a_running_tests_row_keeps_its_revisions(
    grown: dict[str, Any], two: tuple[MLAlgorithm, MLAlgorithm]
) -> None:
    """The revisions go with their rows, by the rows' id range: a row the batch kept (its
    A/B test is running) sits in that range and keeps its revisions."""
    kept_old = min(grown["kept"])  # an old row of the running test, between deleted ones
    FeedbackRevision.objects.create(request_id=kept_old, feedback=">50K")
    retention.prune(days=30, batch_size=10)
    assert list(FeedbackRevision.objects.values_list("request_id", flat=True)) == [kept_old]


def test_the_revisions_statement_does_not_grow_with_the_batch(
    two: tuple[MLAlgorithm, MLAlgorithm],
) -> None:
    """Regression (bench/prune_bench.py against the commit before): the revisions were
    deleted by the batch's ids, 10,000 bound parameters in two statements per batch, and
    pruning fell from 119k-133k to 50k-55k rows/s on a log with no revisions at all. The
    statement is now the same size whatever the batch."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    forest, _ = two
    sizes = []
    for rows in (5, 60):
        aged(log_rows(forest, rows), 40)
        with CaptureQueriesContext(connection) as queries:
            assert retention.prune(days=30, batch_size=1000).deleted == rows
        [statement] = [
            q["sql"]
            for q in queries.captured_queries
            if FeedbackRevision._meta.db_table in q["sql"]
        ]
        sizes.append(len(re.sub(r"\d+", "N", statement)))  # ids and dates: one N each
    assert sizes[0] == sizes[1], sizes
