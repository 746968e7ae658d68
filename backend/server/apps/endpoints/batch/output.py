"""Streaming the answer to a batch upload, as JSON or as the uploaded CSV plus columns.

Both are generators over the compact arrays of a ``BatchResult`` (and, for CSV, a second
pass over the uploaded file), so a million-row answer never exists in memory at once.

The fields of each row follow the model's answers (``Signature.outputs``), between the
row's ``request_id`` and its ``feedback_token``:

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

from apps.endpoints.batch.score import BatchResult
from apps.endpoints.serving import feedback
from apps.ml import codecs
from apps.ml.signature import Signature

_ROWS_PER_PIECE = 5_000
_SCAN_BYTES = 4 * 1024 * 1024


def summary(result: BatchResult) -> dict[str, Any]:
    arm_rows = [int((result.arms == arm).sum()) for arm in range(len(result.algorithms))]
    metrics = result.evaluation.summary(result.signature.task)
    return {
        "count": result.count,
        "algorithms": [
            {"id": a.pk, "name": a.name, "version": a.version, "rows": rows}
            for a, rows in zip(result.algorithms, arm_rows, strict=True)
        ],
        "ignored_columns": result.ignored_columns,
        "label_column": result.label_column,
        "labelled": metrics.pop("labelled"),
        "accuracy": metrics.pop("accuracy", None),
        "metrics": metrics,  # a regressor's mae, rmse and r2
    }


def csv_columns(signature: Signature) -> list[str]:
    """The answer columns a CSV answer appends after ``request_id``."""
    if "prediction" in signature.outputs:
        return ["prediction"]
    columns = ["label"]
    if "probability" in signature.outputs:
        columns.append("probability")
    elif "probabilities" in signature.outputs:
        columns += [f"probability_{c}" for c in signature.classes]
    return columns


@dataclass
class _Piece:
    """A piece of the answer's rows as Python objects, made a piece at a time: converting
    whole arrays at once cost about 70 MB at a million rows."""

    ids: list[int]
    tokens: list[str]
    labels: list[str] | None = None
    probabilities: list[list[float]] | None = None
    values: list[float] | None = None


def answer_header(result: BatchResult) -> list[str]:
    """The columns a CSV answer appends to the uploaded ones."""
    if not result.logged:
        return csv_columns(result.signature)
    return ["request_id", *csv_columns(result.signature), "feedback_token"]


def _pieces(result: BatchResult) -> Iterator[_Piece]:
    for start in range(0, result.count, _ROWS_PER_PIECE):
        part = slice(start, start + _ROWS_PER_PIECE)
        if result.logged:
            ids = result.request_ids[part].tolist()
            piece = _Piece(ids=ids, tokens=feedback.tokens_for(ids))
        else:  # no log rows: no ids, no tokens
            ids = list(range(start, min(start + _ROWS_PER_PIECE, result.count)))
            piece = _Piece(ids=ids, tokens=[])
        if result.labels is not None:
            piece.labels = result.labels[part].tolist()
        if result.probabilities is not None:
            piece.probabilities = result.probabilities[part].tolist()
        if result.values is not None:
            piece.values = result.values[part].tolist()
        for column in (piece.labels, piece.probabilities, piece.values):
            if column is not None and len(column) != len(ids):
                raise ValueError("a BatchResult's arrays differ in length")
        yield piece


def _csv_cells(result: BatchResult, piece: _Piece) -> list[tuple[Any, ...]]:
    """Per row, its answer's cells in ``csv_columns`` order."""
    if piece.values is not None:
        return [(v,) for v in piece.values]
    assert piece.labels is not None
    columns = csv_columns(result.signature)
    if piece.probabilities is None or columns == ["label"]:
        return [(label,) for label in piece.labels]
    if "probability" in columns:
        return [
            (label, row[1]) for label, row in zip(piece.labels, piece.probabilities, strict=True)
        ]
    return [(label, *row) for label, row in zip(piece.labels, piece.probabilities, strict=True)]


def _json_rows(result: BatchResult) -> Iterator[str]:
    """Each row as JSON text, from a template per label filled with the row's numbers (as
    ``codecs.answer_texts`` does for the log): a dict and a dumps per row cost more than
    the model."""
    signature = result.signature
    with_numbers = result.probabilities is not None
    templates: dict[str, str] = {}
    for piece in _pieces(result):
        if piece.values is not None:
            for pk, value, token in zip(piece.ids, piece.values, piece.tokens, strict=True):
                yield f'{{"request_id":{pk},"prediction":{value!r},"feedback_token":"{token}"}}'
            continue
        assert piece.labels is not None
        rows = codecs.probability_numbers(signature, piece.probabilities, len(piece.ids))
        for pk, label, numbers, token in zip(
            piece.ids, piece.labels, rows, piece.tokens, strict=True
        ):
            template = templates.get(label)
            if template is None:
                template = templates[label] = codecs.label_template(
                    signature,
                    label,
                    head='"request_id":%d,',
                    tail=',"feedback_token":"%s"}',
                    numbers=with_numbers,
                )
            yield template % (pk, *numbers, token)


def predictions(result: BatchResult) -> list[dict[str, Any]]:
    return [json.loads(row) for row in _json_rows(result)]


def json_stream(result: BatchResult) -> Iterator[str]:
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


def csv_stream(result: BatchResult, upload: IO[bytes], *, header: bool = True) -> Iterator[str]:
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
        answers: Iterator[tuple[Any, ...]] = (
            (
                (pk, *cells, token)
                for piece in _pieces(result)
                for pk, cells, token in zip(
                    piece.ids, _csv_cells(result, piece), piece.tokens, strict=True
                )
            )
            if result.logged
            else (cells for piece in _pieces(result) for cells in _csv_cells(result, piece))
        )
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


def _answer_lines(result: BatchResult) -> Iterator[list[str]]:
    """The answer columns of each row as CSV text, a piece of rows at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for piece in _pieces(result):
        cells = _csv_cells(result, piece)
        if result.logged:
            writer.writerows(
                (pk, *row, token)
                for pk, row, token in zip(piece.ids, cells, piece.tokens, strict=True)
            )
        else:
            writer.writerows(cells)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        lines = text.split("\n")[:-1]
        if len(lines) != len(piece.ids):  # a label with a line break: written row by row
            lines = []
            for row in cells:
                writer.writerow(row)
                lines.append(buffer.getvalue()[:-1])
                buffer.seek(0)
                buffer.truncate()
            if result.logged:
                lines = [
                    f"{pk},{line},{token}"
                    for pk, line, token in zip(piece.ids, lines, piece.tokens, strict=True)
                ]
        yield lines


def _plain_csv_stream(result: BatchResult, upload: IO[bytes], header: bool) -> Iterator[str]:
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
            raise ValueError("the file has fewer records than the BatchResult has rows")
        texts = b"\n".join(lines).decode().split("\n")
        yield "".join(f"{text},{answer}\n" for text, answer in zip(texts, answers, strict=True))
    if next(records, None) is not None:
        raise ValueError("the file has more records than the BatchResult has rows")
