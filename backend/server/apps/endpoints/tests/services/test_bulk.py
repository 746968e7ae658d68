"""The fast log writer: exact values back, ids that are never reused, writes on a thread
of their own inside the caller's transaction."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from django.db import IntegrityError, OperationalError, transaction

from apps.endpoints.models import MLRequest
from apps.endpoints.serving import bulk
from apps.endpoints.tests.factories import algorithm
from apps.ml.registry import MLRegistry

pytestmark = pytest.mark.django_db


def test_rows_come_back_exactly_as_written(registry: MLRegistry) -> None:
    alg = algorithm(registry)
    awkward = {"occupation": 'Tab\there "quoted" back\\slash\nnew line', "age": "37"}
    rows: list[bulk.LogRow] = [
        bulk.LogRow(
            json.dumps(awkward),
            '{"label":"<=50K"}',
            "<=50K",
            "a\tb\\c\nd",
            alg.pk,
            None,
            None,
            None,
        ),
        bulk.LogRow('{"age":"1"}', '{"label":">50K"}', ">50K", None, alg.pk, None, None, None),
        bulk.LogRow('{"age":"2"}', '{"label":">50K"}', ">50K", "\\N", alg.pk, None, None, None),
    ]
    with transaction.atomic():
        ids = bulk.insert_requests(rows)
    assert len(set(ids.tolist())) == 3
    first, second, third = (MLRequest.objects.get(pk=pk) for pk in ids.tolist())
    assert first.input_data == awkward and first.feedback == "a\tb\\c\nd"
    assert first.full_response == {"label": "<=50K"} and first.parent_mlalgorithm_id == alg.pk
    assert second.feedback is None and second.response == ">50K"
    assert third.feedback == "\\N"  # a literal backslash-N is text, not NULL
    assert first.created_at is not None


@pytest.mark.parametrize("one_row", [True, False], ids=["insert_request", "insert_requests"])
def test_the_user_and_the_feedback_audit_are_written(
    registry: MLRegistry, django_user_model: Any, one_row: bool
) -> None:
    alg = algorithm(registry)
    user = django_user_model.objects.create_user("alice")
    labelled = bulk.LogRow("{}", "{}", "<=50K", ">50K", alg.pk, None, user.pk, "user:alice")
    unlabelled = bulk.LogRow("{}", "{}", "<=50K", None, alg.pk, None, None, None)
    if one_row:
        ids = [bulk.insert_request(labelled), bulk.insert_request(unlabelled)]
    else:
        with transaction.atomic():
            ids = bulk.insert_requests([labelled, unlabelled]).tolist()
    given, plain = (MLRequest.objects.get(pk=pk) for pk in ids)
    assert given.user_id == user.pk and given.feedback == ">50K"
    assert (given.feedback_by, given.feedback_via) == ("user:alice", "upload")
    assert given.feedback_at == given.created_at
    assert plain.user_id is None
    assert (plain.feedback_by, plain.feedback_via, plain.feedback_at) == (None, None, None)


def test_ids_continue_after_rows_made_elsewhere_and_are_never_reused(
    registry: MLRegistry,
) -> None:
    alg = algorithm(registry)
    row = bulk.LogRow("{}", "{}", "<=50K", None, alg.pk, None, None, None)
    with transaction.atomic():
        first = bulk.insert_requests([row, row]).tolist()
    made = MLRequest.objects.create(
        input_data={}, full_response={}, response="x", parent_mlalgorithm=alg
    )
    assert made.pk > max(first)
    MLRequest.objects.filter(pk=made.pk).delete()
    with transaction.atomic():
        later = bulk.insert_requests([row]).tolist()
    assert later[0] > made.pk
    after = MLRequest.objects.create(
        input_data={}, full_response={}, response="x", parent_mlalgorithm=alg
    )
    assert after.pk > later[0]


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_run_outside_a_transaction(registry: MLRegistry) -> None:
    alg = algorithm(registry)
    with pytest.raises(RuntimeError, match=r"must run inside transaction\.atomic"):
        bulk.insert_requests([bulk.LogRow("{}", "{}", "<=50K", None, alg.pk, None, None, None)])
    assert MLRequest.objects.count() == 0


def test_rows_beyond_one_statement_are_all_written_in_order(
    registry: MLRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    alg = algorithm(registry)
    monkeypatch.setattr(bulk, "_MAX_ROWS_PER_STATEMENT", 3)  # 10 rows: 3 + 3 + 3 + 1
    rows: list[bulk.LogRow] = [
        bulk.LogRow(json.dumps({"n": str(n)}), "{}", "<=50K", None, alg.pk, None, None, None)
        for n in range(10)
    ]
    with transaction.atomic():
        ids = bulk.insert_requests(rows).tolist()
    assert ids == sorted(ids) and len(set(ids)) == 10
    stored = dict(MLRequest.objects.values_list("pk", "input_data"))
    assert [stored[pk] for pk in ids] == [{"n": str(n)} for n in range(10)]


def test_the_background_writer_writes_in_the_callers_transaction(registry: MLRegistry) -> None:
    alg = algorithm(registry)
    row = bulk.LogRow("{}", "{}", "<=50K", None, alg.pk, None, None, None)
    with transaction.atomic(), bulk.BackgroundWriter() as writer:
        futures = [writer.submit([row] * 3) for _ in range(4)]
    ids = [pk for future in futures for pk in future.result().tolist()]
    assert sorted(ids) == ids and len(set(ids)) == 12
    assert MLRequest.objects.count() == 12

    class Stop(Exception):
        pass

    with pytest.raises(Stop), transaction.atomic(), bulk.BackgroundWriter() as writer:
        writer.submit([row] * 5)
        raise Stop  # the caller fails while the write may still be running
    assert MLRequest.objects.count() == 12  # the writer finished first, then all rolled back


@pytest.mark.django_db(transaction=True)  # SQLite checks foreign keys at the real COMMIT
def test_a_failed_background_write_raises_a_django_error_and_writes_nothing(
    registry: MLRegistry,
) -> None:
    alg = algorithm(registry)
    good = bulk.LogRow("{}", "{}", "<=50K", None, alg.pk, None, None, None)
    orphan = bulk.LogRow(
        "{}",
        "{}",
        "<=50K",
        None,
        alg.pk + 1000,
        None,
        None,
        None,
    )  # no such algorithm
    with pytest.raises(IntegrityError), transaction.atomic(), bulk.BackgroundWriter() as writer:
        writer.submit([good] * 3)
        writer.submit([good, orphan])
    assert MLRequest.objects.count() == 0


def test_submit_waits_while_too_many_writes_are_pending(
    registry: MLRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backpressure: a slow database must not let chunks pile up in memory."""
    release = threading.Event()
    written: list[int] = []

    def slow_insert(rows: Sequence[bulk.LogRow], *, using: Any) -> np.ndarray:
        release.wait(timeout=10)
        written.append(len(rows))
        return np.arange(len(rows))

    monkeypatch.setattr(bulk, "write_rows", slow_insert)
    submitted: list[int] = []
    with transaction.atomic(), bulk.BackgroundWriter(max_pending=1) as writer:

        def caller() -> None:
            for n in (1, 2):
                writer.submit([bulk.LogRow("{}", "{}", "x", None, 1, None, None, None)] * n)
                submitted.append(n)

        thread = threading.Thread(target=caller)
        thread.start()
        thread.join(timeout=0.5)
        assert submitted == [1] and thread.is_alive()  # the second waits for the first
        release.set()
        thread.join(timeout=10)
    assert submitted == [1, 2] and written == [1, 2]


@pytest.mark.django_db(transaction=True)  # a real transaction, for SQLite to end by itself
def test_no_write_runs_after_one_has_failed(
    registry: MLRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (found in review): on some errors (disk full, I/O) SQLite rolls the whole
    transaction back by itself. The next queued write then ran outside any transaction,
    in autocommit, and its rows stayed after the upload was answered with a 503."""
    alg = algorithm(registry)
    row = bulk.LogRow("{}", "{}", "<=50K", None, alg.pk, None, None, None)
    real = bulk.write_rows
    calls: list[int] = []

    def full_disk_on_second_write(rows: Sequence[bulk.LogRow], *, using: Any) -> np.ndarray:
        calls.append(len(rows))
        if len(calls) == 2:
            if using.vendor == "sqlite":
                using.connection.execute("ROLLBACK")  # what SQLite does on SQLITE_FULL
            raise OperationalError("database or disk is full")
        return real(rows, using=using)

    monkeypatch.setattr(bulk, "write_rows", full_disk_on_second_write)
    with pytest.raises(OperationalError), transaction.atomic(), bulk.BackgroundWriter() as writer:
        for _ in range(3):
            writer.submit([row] * 10)
    assert calls == [10, 10]  # the third write never ran
    assert MLRequest.objects.count() == 0
