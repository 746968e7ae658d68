"""Writing many ``MLRequest`` rows fast: few statements per chunk, ids reserved up front,
and, for a batch upload, on a thread of its own.

Django's ``bulk_create`` costs about 90 us a row on SQLite and 250 us on PostgreSQL here
(model instances, per-field preparation, per-batch RETURNING), which made persistence cost
ten times the model itself on a 100k-row upload. This module writes pre-serialised rows
with multi-row ``INSERT ... VALUES`` statements (SQLite) or ``COPY`` (PostgreSQL) and
reserves the primary keys first, so every row's ``request_id`` is known without reading
them back.

``BackgroundWriter`` runs those writes beside the caller. The database does its part of a
statement without the GIL (SQLite's C code in this process, PostgreSQL in its own), so one
statement of thousands of rows overlaps the caller's Python work; ``executemany`` would
not, since it takes the GIL back for every row.

Must run inside ``transaction.atomic()``: on SQLite the project opens transactions with
``BEGIN IMMEDIATE`` (settings.py), so the write lock is held while ids are reserved and no
other writer can take the same ids.

Rows written with feedback (a batch file's label column) are added to the feedback tally
(``tally.py``) in the same transaction: at once by ``insert_requests`` and
``insert_request``, once at the end by ``BackgroundWriter``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain
from types import TracebackType
from typing import Any, NamedTuple, Self

import numpy as np
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from apps.endpoints.models import MLRequest
from apps.endpoints.serving import tally


class LogRow(NamedTuple):
    """One ``MLRequest`` as the writers here take it: text already serialised, ids, in the
    order of ``_COLUMNS``. Feedback written with the row comes from the label column of an
    uploaded file: its ``feedback_via`` is "upload", its ``feedback_at`` the row's time."""

    input_data: str  # the record as sent, JSON text
    full_response: str  # the answer (ml/answer.py), JSON text
    response: str  # the label, or the predicted number as text
    feedback: str | None
    algorithm_id: int
    ab_test_id: int | None  # the A/B test that routed the row
    user_id: int | None  # who made the request, when authenticated
    feedback_by: str | None  # who gave the feedback (policy.Actor.label)


_TABLE = MLRequest._meta.db_table
_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]")
_COLUMNS = (
    "input_data, full_response, response, feedback, parent_mlalgorithm_id, ab_test_id, "
    "user_id, feedback_by, feedback_via, feedback_at, created_at, id"
)
_UPLOAD = "upload"  # feedback_via of the feedback that comes with the rows
_NO_AUDIT = (None, None)
# Past a few thousand rows a statement gains nothing (measured: 4,000 rows a statement
# overlap the caller's work about as well as one statement per chunk).
_MAX_ROWS_PER_STATEMENT = 4_000


def insert_requests(rows: Sequence[LogRow]) -> np.ndarray:
    """Insert ``rows``, and the feedback they carry into the tally; returns their ids in
    order."""
    ids = write_rows(rows, using=connections[DEFAULT_DB_ALIAS])
    if any(row.feedback is not None for row in rows):
        counts = tally.Changes()
        counts.add_rows(rows, regressors=tally.regressor_ids())
        tally.save(counts)
    return ids


def write_rows(rows: Sequence[LogRow], *, using: BaseDatabaseWrapper) -> np.ndarray:
    """Insert ``rows`` on ``using``, from any thread, and nothing else (the caller keeps
    the tally); returns their ids in order."""
    db = using
    if db.get_autocommit():
        raise RuntimeError("write_rows must run inside transaction.atomic() (see module doc)")
    if not rows:
        return np.empty(0, dtype=np.int64)
    ids = _reserve_ids(db, len(rows))
    # A datetime on PostgreSQL (its adapter returns it as is), a str on SQLite.
    created_at: Any = db.ops.adapt_datetimefield_value(timezone.now())
    # The driver is called directly (COPY has no DB-API form; see _insert_values), so its
    # errors are turned into Django's here, as a Django cursor would.
    with db.wrap_database_errors:
        if db.vendor == "postgresql":
            with db.connection.cursor() as cursor:
                with cursor.copy(f"COPY {_TABLE} ({_COLUMNS}) FROM STDIN") as copy:
                    copy.write(_copy_text(rows, ids, created_at.isoformat()))
        else:
            _insert_values(db.connection, rows, ids, created_at)
    return ids


def _insert_values(
    sqlite: sqlite3.Connection, rows: Sequence[LogRow], ids: np.ndarray, created_at: str
) -> None:
    """SQLite: as many rows per ``INSERT ... VALUES (...), (...)`` as its bound-parameter
    limit allows (4,000 with SQLite 3.32 and later), so that the C library does the work of
    thousands of rows in one call, without the GIL. Sent to the driver itself, with ``?``:
    Django's cursor would scan each 130 KB statement for ``%s`` (4 ms), and with DEBUG on
    its query log would fail to format ``?`` statements. The log shows neither these nor
    PostgreSQL's COPY."""
    width = len(_COLUMNS.split(","))
    uploaded = (_UPLOAD, created_at)  # (feedback_via, feedback_at) of feedback in the file
    limit = sqlite.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per_statement = max(1, min(_MAX_ROWS_PER_STATEMENT, limit // width))
    group = "(" + ",".join("?" * width) + ")"
    insert = f"INSERT INTO {_TABLE} ({_COLUMNS}) VALUES "
    pks = ids.tolist()
    for start in range(0, len(rows), per_statement):
        part = rows[start : start + per_statement]
        params = list(
            chain.from_iterable(
                (*row, *(_NO_AUDIT if row.feedback is None else uploaded), created_at, pk)
                for row, pk in zip(part, pks[start : start + per_statement], strict=True)
            )
        )
        sqlite.execute(insert + ",".join([group] * len(part)), params)


class BackgroundWriter:
    """Writes chunks of rows with ``write_rows`` on a thread of its own, on the caller's
    connection and so in the caller's transaction.

    With ``pieces`` (SQLite, whose one write lock a whole upload's transaction held, so
    that single predictions waited for the upload), the caller is not in a transaction:
    each chunk commits on its own, rows and tally, on the thread's own connection, and
    ``written`` lists the ids committed, for the caller to take back if it fails.

        with transaction.atomic(), BackgroundWriter() as writer:
            ids = writer.submit(rows)  # a Future of the rows' ids

    The caller must not use the connection until the ``with`` block ends: leaving it waits
    for every write, so the transaction commits or rolls back only after the last one. At
    most ``max_pending`` chunks wait to be written (``submit`` blocks past that), so a
    writer slower than its caller does not make memory grow with the file. The rows'
    feedback is added to the tally when the block ends, once: the tally's row of an
    algorithm stays locked from then until the commit, not for the whole upload.
    """

    def __init__(self, max_pending: int = 2, *, pieces: bool = False) -> None:
        self._db = connections[DEFAULT_DB_ALIAS]
        self._pieces = pieces
        self.written: list[np.ndarray] = []  # pieces: the ids committed, chunk by chunk
        self._max_pending = max_pending
        self._pending: list[Future[np.ndarray]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._failed = False  # set by the writer thread; later writes must not run
        self._counts = tally.Changes()  # the rows' feedback, added up by the writer thread
        self._regressors: set[int] = set()

    def __enter__(self) -> Self:
        if self._pieces:
            if not self._db.get_autocommit():
                raise RuntimeError("BackgroundWriter(pieces=True) commits each chunk itself")
            self._regressors = tally.regressor_ids()
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-writer")
            return self
        if self._db.get_autocommit():
            raise RuntimeError("BackgroundWriter must run inside transaction.atomic()")
        if self._db.vendor == "postgresql":
            # Deferred foreign-key checks would all run at COMMIT, one after the other once
            # the rows are written; immediate ones run on the server at the end of each
            # COPY, while this process prepares the next chunk.
            with self._db.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        self._regressors = tally.regressor_ids()  # now: the writer thread runs no ORM query
        self._db.inc_thread_sharing()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-writer")
        return self

    def submit(self, rows: Sequence[LogRow]) -> Future[np.ndarray]:
        assert self._pool is not None, "use BackgroundWriter in a with block"
        while len(self._pending) >= self._max_pending:
            self._pending.pop(0).result()  # raises the write's error, if it failed
        future = self._pool.submit(self._write, rows)
        self._pending.append(future)
        return future

    def _write(self, rows: Sequence[LogRow]) -> np.ndarray:
        # Once a write has failed, none may follow: on some errors (disk full, I/O) SQLite
        # rolls the whole transaction back by itself, and a later write would then run in
        # autocommit and stay, whatever the caller's rollback does.
        if self._failed:
            raise DatabaseError("An earlier write of this batch failed.")
        if self._pieces:
            return self._commit(rows)
        if self._db.vendor == "sqlite" and not self._db.connection.in_transaction:
            self._failed = True
            raise DatabaseError("The batch's transaction ended before its rows were written.")
        try:
            ids = write_rows(rows, using=self._db)
        except BaseException:
            self._failed = True
            raise
        self._counts.add_rows(rows, regressors=self._regressors)
        return ids

    def _commit(self, rows: Sequence[LogRow]) -> np.ndarray:
        """One chunk and its feedback in one short transaction, on this thread's own
        connection (Django's connections are per thread)."""
        try:
            with transaction.atomic():
                ids = write_rows(rows, using=connections[DEFAULT_DB_ALIAS])
                counts = tally.Changes()
                counts.add_rows(rows, regressors=self._regressors)
                tally.save(counts)
        except BaseException:
            self._failed = True
            raise
        self.written.append(ids)
        return ids

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._pool is not None
        if self._pieces:
            if exc_type is not None:  # chunks not started are dropped
                for future in self._pending:
                    future.cancel()
            # Looked up on the writer thread: its own connection, closed with it.
            self._pool.submit(lambda: connections[DEFAULT_DB_ALIAS].close())
            self._pool.shutdown(wait=True)
            if exc_type is None:
                for future in self._pending:
                    future.result()
            return
        # Every write started is done before the transaction ends; those not started are
        # dropped when the caller failed.
        self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)
        self._db.dec_thread_sharing()
        if exc_type is None:
            for future in self._pending:
                future.result()
            tally.save(self._counts)


def insert_request(row: LogRow) -> int:
    """Insert one row; returns its id. One statement (INSERT ... RETURNING), no
    transaction needed: the single-prediction path, where ORM overhead is most of the cost.
    A row with feedback (none on that path) also adds it to the tally, in one transaction."""
    if row.feedback is not None:
        with transaction.atomic():
            pk = _insert_one(row)
            counts = tally.Changes()
            counts.add_rows([row], regressors=tally.regressor_ids())
            tally.save(counts)
            return pk
    return _insert_one(row)


def _insert_one(row: LogRow) -> int:
    created_at = connection.ops.adapt_datetimefield_value(timezone.now())
    json_value = "%s::jsonb" if connection.vendor == "postgresql" else "%s"
    columns = _COLUMNS.removesuffix(", id")
    audit = _NO_AUDIT if row.feedback is None else (_UPLOAD, created_at)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_TABLE} ({columns}) VALUES "
            f"({json_value}, {json_value}, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            [*row, *audit, created_at],
        )
        return int(cursor.fetchone()[0])


def _reserve_ids(db: BaseDatabaseWrapper, count: int) -> np.ndarray:
    with db.cursor() as cursor:
        if db.vendor == "postgresql":
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                [_TABLE, count],
            )
            return np.array([r[0] for r in cursor.fetchall()], dtype=np.int64)
        # SQLite: AUTOINCREMENT never reuses an id, so start past both the highest id and
        # the highest ever handed out (sqlite_sequence); explicit ids advance it.
        cursor.execute(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = %s), 0),"
            f" COALESCE((SELECT MAX(id) FROM {_TABLE}), 0))",
            [_TABLE],
        )
        start = int(cursor.fetchone()[0])
    return np.arange(start + 1, start + 1 + count, dtype=np.int64)


_NULL = "\\N"


def _copy_text(rows: Sequence[LogRow], ids: np.ndarray, created_at: str) -> str:
    """Rows in COPY's text format: tab-separated, \\N for NULL, backslashes doubled.
    JSON text never holds a raw tab or newline (JSON escapes them), but feedback comes from
    clients, so the chunk is escaped whenever any of its text needs it."""
    text = "".join(f"{i}{r}{label}{fb or ''}{by or ''}" for i, r, label, fb, *_, by in rows)
    esc = _escape if _NEEDS_ESCAPE.search(text) else str
    no_audit = f"{_NULL}\t{_NULL}\t{_NULL}"  # feedback_by, feedback_via, feedback_at
    uploaded = f"\t{_UPLOAD}\t{created_at}"
    return "".join(
        f"{esc(i)}\t{esc(r)}\t{esc(label)}\t{_NULL if fb is None else esc(fb)}\t"
        f"{algorithm}\t{_NULL if abtest is None else abtest}\t"
        f"{_NULL if user is None else user}\t"
        f"{no_audit if fb is None else esc(by or '') + uploaded}\t{created_at}\t{pk}\n"
        for (i, r, label, fb, algorithm, abtest, user, by), pk in zip(
            rows, ids.tolist(), strict=True
        )
    )


def _escape(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )
