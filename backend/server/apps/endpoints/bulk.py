"""Writing many ``MLRequest`` rows fast: one statement stream per chunk, ids reserved up front.

Django's ``bulk_create`` costs about 90 us a row on SQLite and 250 us on PostgreSQL here
(model instances, per-field preparation, per-batch RETURNING), which made persistence cost
ten times the model itself on a 100k-row upload. This module writes pre-serialised rows
with ``executemany`` (SQLite) or ``COPY`` (PostgreSQL) and reserves the primary keys first,
so every row's ``request_id`` is known without reading them back.

Must run inside ``transaction.atomic()``: on SQLite the project opens transactions with
``BEGIN IMMEDIATE`` (settings.py), so the write lock is held while ids are reserved and no
other writer can take the same ids.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from django.db import connection
from django.utils import timezone

from apps.endpoints.models import MLRequest

# (input_data JSON, full_response JSON, response label, feedback or None, algorithm id,
#  id of the A/B test that routed the row or None)
Row = tuple[str, str, str, str | None, int, int | None]

_TABLE = MLRequest._meta.db_table
_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]")
_COLUMNS = (
    "input_data, full_response, response, feedback, parent_mlalgorithm_id, ab_test_id, created_at, id"
)


def insert_requests(rows: Sequence[Row]) -> np.ndarray:
    """Insert ``rows``; returns their ids in order."""
    if connection.get_autocommit():
        raise RuntimeError("insert_requests must run inside transaction.atomic() (see module doc)")
    if not rows:
        return np.empty(0, dtype=np.int64)
    ids = _reserve_ids(len(rows))
    created_at = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {_TABLE} ({_COLUMNS}) FROM STDIN") as copy:
                copy.write(_copy_text(rows, ids, created_at.isoformat()))
        else:
            cursor.executemany(
                f"INSERT INTO {_TABLE} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [(*row, created_at, pk) for row, pk in zip(rows, ids.tolist())],
            )
    return ids


def insert_request(row: Row) -> int:
    """Insert one row; returns its id. One statement (INSERT ... RETURNING), no
    transaction needed: the single-prediction path, where ORM overhead is most of the cost."""
    created_at = connection.ops.adapt_datetimefield_value(timezone.now())
    json_value = "%s::jsonb" if connection.vendor == "postgresql" else "%s"
    columns = _COLUMNS.removesuffix(", id")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_TABLE} ({columns}) VALUES "
            f"({json_value}, {json_value}, %s, %s, %s, %s, %s) RETURNING id",
            [*row, created_at],
        )
        return int(cursor.fetchone()[0])


def _reserve_ids(count: int) -> np.ndarray:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
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


def _copy_text(rows: Sequence[Row], ids: np.ndarray, created_at: str) -> str:
    """Rows in COPY's text format: tab-separated, \\N for NULL, backslashes doubled.
    JSON text never holds a raw tab or newline (JSON escapes them), but feedback comes from
    clients, so the chunk is escaped whenever any of its text needs it."""
    text = "".join(f"{i}{r}{label}{fb or ''}" for i, r, label, fb, *_ in rows)
    esc = _escape if _NEEDS_ESCAPE.search(text) else str
    return "".join(
        f"{esc(i)}\t{esc(r)}\t{esc(label)}\t{_NULL if fb is None else esc(fb)}\t"
        f"{algorithm}\t{_NULL if abtest is None else abtest}\t{created_at}\t{pk}\n"
        for (i, r, label, fb, algorithm, abtest), pk in zip(rows, ids.tolist())
    )


def _escape(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )
