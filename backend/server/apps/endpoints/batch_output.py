"""Streaming the answer to a batch upload, as JSON or as the uploaded CSV plus columns.

Both are generators over the compact arrays of a ``BatchResult`` (and, for CSV, a second
pass over the uploaded file), so a million-row answer never exists in memory at once.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import IO, Any

from apps.endpoints import feedback
from apps.endpoints.batch import BatchResult

APPENDED_COLUMNS = ("request_id", "label", "probability", "feedback_token")
_ROWS_PER_PIECE = 5_000


def summary(result: BatchResult) -> dict[str, Any]:
    arm_rows = [int((result.arms == arm).sum()) for arm in range(len(result.algorithms))]
    return {
        "count": result.count,
        "algorithms": [
            {"id": a.pk, "name": a.name, "version": a.version, "rows": rows}
            for a, rows in zip(result.algorithms, arm_rows, strict=True)
        ],
        "ignored_columns": result.ignored_columns,
        "label_column": result.label_column,
        "labelled": result.labelled,
        "accuracy": result.accuracy,
    }


def _answers(result: BatchResult) -> Iterator[tuple[int, str, float, str]]:
    """Each row's (request_id, label, probability, feedback_token), made Python objects a
    piece at a time: converting whole arrays at once cost about 70 MB at a million rows."""
    if not len(result.request_ids) == len(result.labels) == len(result.probabilities):
        raise ValueError("a BatchResult's arrays differ in length")
    for start in range(0, result.count, _ROWS_PER_PIECE):
        piece = slice(start, start + _ROWS_PER_PIECE)
        ids = result.request_ids[piece].tolist()
        yield from zip(
            ids,
            result.labels[piece],
            result.probabilities[piece].tolist(),
            feedback.tokens_for(ids),
            strict=True,
        )


def _predictions(result: BatchResult) -> Iterator[str]:
    quoted: dict[str, str] = {}  # a file has a handful of labels: each is encoded once
    for pk, label, p, token in _answers(result):
        text = quoted.get(label) or quoted.setdefault(label, json.dumps(label))
        yield (
            f'{{"request_id":{pk},"label":{text},"probability":{p!r},"feedback_token":"{token}"}}'
        )


def predictions(result: BatchResult) -> list[dict[str, Any]]:
    return [json.loads(row) for row in _predictions(result)]


def json_stream(result: BatchResult) -> Iterator[str]:
    head = json.dumps(summary(result), separators=(",", ":"))
    yield head[:-1] + ',"predictions":['
    piece: list[str] = []
    for n, row in enumerate(_predictions(result)):
        piece.append(row)
        if len(piece) == _ROWS_PER_PIECE:
            yield ("," if n >= _ROWS_PER_PIECE else "") + ",".join(piece)
            piece = []
    if piece:
        yield ("," if result.count > len(piece) else "") + ",".join(piece)
    yield "]}"


def csv_stream(result: BatchResult, upload: IO[bytes]) -> Iterator[str]:
    """The uploaded rows, in order, with ``request_id``, ``label`` and ``probability``."""
    upload.seek(0)
    text = io.TextIOWrapper(upload, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(text, strict=True)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([*next(reader), *APPENDED_COLUMNS])
        answers = _answers(result)
        for n, row in enumerate(row for row in reader if row):  # blank lines were skipped
            writer.writerow([*row, *next(answers)])
            if n % _ROWS_PER_PIECE == _ROWS_PER_PIECE - 1:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()
    finally:
        text.detach()
