"""Streaming the answer to a batch, as JSON or as the uploaded CSV plus columns.

Both are generators over the compact arrays of a ``ScoredBatch`` (and, for CSV, a second
pass over the uploaded file), so a million-row answer never exists in memory at once. The
answer's fields, their order and their encoding are the model's ``Answer``
(``apps/ml/answer.py``), between the row's ``request_id`` and its ``feedback_token`` when
the rows were logged:

- JSON: ``label``, ``probability`` (binary), ``probabilities`` (a map), or ``prediction``;
- CSV: ``label``, then ``probability`` for a binary classifier or ``probability_<class>``
  per class for a multiclass one; ``prediction`` for a regressor.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from apps.endpoints.serving import feedback
from apps.endpoints.serving.pipeline import ScoredBatch
from apps.ml.answer import ModelOutput

_ROWS_PER_PIECE = 5_000
_SCAN_BYTES = 4 * 1024 * 1024


def summary(result: ScoredBatch) -> dict[str, Any]:
    metrics = result.evaluation.summary(result.answer.signature.task)
    return {
        "count": result.count,
        "algorithms": [
            {"id": a.pk, "name": a.name, "version": a.version, "rows": rows}
            for a, rows in zip(result.arms.algorithms, result.rows_per_arm(), strict=True)
        ],
        "ignored_columns": result.ignored_columns,
        "label_column": result.label_column,
        "labels_recorded": result.label_column is not None and result.labels_note is None,
        "labels_note": result.labels_note,
        "labelled": metrics.pop("labelled"),
        "accuracy": metrics.pop("accuracy", None),
        "metrics": metrics,  # a regressor's mae, rmse and r2
    }


def answer_header(result: ScoredBatch) -> list[str]:
    """The columns a CSV answer appends to the uploaded ones."""
    return result.answer.csv_header(logged=result.logged)


@dataclass
class _Piece:
    """A piece of the answer's rows: made a piece at a time, since converting whole arrays
    to Python objects at once cost about 70 MB at a million rows."""

    output: ModelOutput
    ids: list[int] | None  # None: the rows were not logged
    tokens: list[str] | None


def _pieces(result: ScoredBatch) -> Iterator[_Piece]:
    for start in range(0, result.count, _ROWS_PER_PIECE):
        part = slice(start, start + _ROWS_PER_PIECE)
        output = result.output.part(part)
        if result.logged:
            ids = result.request_ids[part].tolist()
            yield _Piece(output, ids, feedback.tokens_for(ids))
        else:
            yield _Piece(output, None, None)


def _json_rows(result: ScoredBatch) -> Iterator[str]:
    for piece in _pieces(result):
        yield from result.answer.row_texts(piece.output, piece.ids, piece.tokens)


def _csv_rows(result: ScoredBatch) -> Iterator[list[tuple[Any, ...]]]:
    """Per piece, each row's answer cells (with its id and token when logged)."""
    for piece in _pieces(result):
        cells = result.answer.csv_rows(piece.output)
        if piece.ids is None or piece.tokens is None:
            yield cells
        else:
            yield [
                (pk, *row, token)
                for pk, row, token in zip(piece.ids, cells, piece.tokens, strict=True)
            ]


def predictions(result: ScoredBatch) -> list[dict[str, Any]]:
    return [json.loads(row) for row in _json_rows(result)]


def json_stream(result: ScoredBatch) -> Iterator[str]:
    head = json.dumps(summary(result), separators=(",", ":"))
    yield head[:-1] + ',"predictions":['
    piece: list[str] = []
    for n, row in enumerate(_json_rows(result)):
        piece.append(row)
        if len(piece) == _ROWS_PER_PIECE:
            yield ("," if n >= _ROWS_PER_PIECE else "") + ",".join(piece)
            piece = []
    if piece:
        yield ("," if result.count > len(piece) else "") + ",".join(piece)
    yield "]}"


def csv_stream(result: ScoredBatch, upload: IO[bytes], *, header: bool = True) -> Iterator[str]:
    """The uploaded rows, in order, with ``request_id``, the answer columns and
    ``feedback_token`` (the answer columns alone when the rows were not logged); without
    the header line when ``header`` is false (the pieces of a batch job after the first).

    A file without quotes or carriage returns (most are) is answered line by line: each
    line is its record as the csv module would write it again, so the answer columns are
    appended to the line as it is. Parsing and re-writing every cell cost a batch job
    more CPU than its model (bench/jobs_bench.py). Any other file goes through the csv
    module."""
    if _plain(upload):
        yield from _plain_csv_stream(result, upload, header)
        return
    upload.seek(0)
    text = io.TextIOWrapper(upload, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(text, strict=True)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        names = next(reader)
        if header:
            writer.writerow([*names, *answer_header(result)])
        answers = (row for piece in _csv_rows(result) for row in piece)
        for n, row in enumerate(row for row in reader if row):  # blank lines were skipped
            writer.writerow([*row, *next(answers)])
            if n % _ROWS_PER_PIECE == _ROWS_PER_PIECE - 1:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()
    finally:
        text.detach()


def _plain(upload: IO[bytes]) -> bool:
    """Whether the file has no quote and no carriage return: every line is a record, and
    every cell is written back as it was read."""
    upload.seek(0)
    while block := upload.read(_SCAN_BYTES):
        if b'"' in block or b"\r" in block:
            return False
    return True


def _answer_lines(result: ScoredBatch) -> Iterator[list[str]]:
    """The answer columns of each row as CSV text, a piece of rows at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for rows in _csv_rows(result):
        writer.writerows(rows)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        lines = text.split("\n")[:-1]
        if len(lines) != len(rows):  # a label with a line break: written row by row
            lines = []
            for row in rows:
                writer.writerow(row)
                lines.append(buffer.getvalue()[:-1])
                buffer.seek(0)
                buffer.truncate()
        yield lines


def _plain_csv_stream(result: ScoredBatch, upload: IO[bytes], header: bool) -> Iterator[str]:
    upload.seek(0)
    names = upload.readline().decode("utf-8-sig").rstrip("\n")
    if header:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(answer_header(result))
        yield f"{names},{buffer.getvalue()}"
    # readline, not iteration: a Django upload's __iter__ starts again from the top.
    records = (line for line in iter(upload.readline, b"") if line != b"\n")
    for answers in _answer_lines(result):
        lines = [line.rstrip(b"\n") for _, line in zip(answers, records, strict=False)]
        if len(lines) != len(answers):
            raise ValueError("the file has fewer records than the ScoredBatch has rows")
        texts = b"\n".join(lines).decode().split("\n")
        yield "".join(f"{text},{answer}\n" for text, answer in zip(texts, answers, strict=True))
    if next(records, None) is not None:
        raise ValueError("the file has more records than the ScoredBatch has rows")
