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
from typing import IO, Any

from apps.endpoints import feedback
from apps.endpoints.batch import BatchResult
from apps.ml.signature import Signature

_ROWS_PER_PIECE = 5_000


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


def _pieces(result: BatchResult) -> Iterator[tuple[list[int], list[tuple[Any, ...]], list[str]]]:
    """Per piece of rows: their ids, their answer cells (in ``csv_columns`` order) and their
    feedback tokens, made Python objects a piece at a time: converting whole arrays at once
    cost about 70 MB at a million rows."""
    columns = csv_columns(result.signature)
    for start in range(0, result.count, _ROWS_PER_PIECE):
        piece = slice(start, start + _ROWS_PER_PIECE)
        ids = result.request_ids[piece].tolist()
        if result.values is not None:
            cells: list[tuple[Any, ...]] = [(v,) for v in result.values[piece].tolist()]
        else:
            assert result.labels is not None
            labels = result.labels[piece].tolist()
            if result.probabilities is None or columns == ["label"]:
                cells = [(label,) for label in labels]
            elif "probability" in columns:
                positive = result.probabilities[piece, 1].tolist()
                cells = list(zip(labels, positive, strict=True))
            else:
                rows = result.probabilities[piece].tolist()
                cells = [(label, *row) for label, row in zip(labels, rows, strict=True)]
        if len(cells) != len(ids):
            raise ValueError("a BatchResult's arrays differ in length")
        yield ids, cells, feedback.tokens_for(ids)


def _json_rows(result: BatchResult) -> Iterator[str]:
    signature = result.signature
    columns = csv_columns(signature)
    classes = signature.classes
    with_map = "probabilities" in signature.outputs and result.probabilities is not None
    quoted: dict[str, str] = {}  # a file has a handful of labels: each is encoded once
    for start, (ids, cells, tokens) in zip(
        range(0, result.count, _ROWS_PER_PIECE), _pieces(result), strict=True
    ):
        probabilities = (
            result.probabilities[start : start + len(ids)].tolist()
            if with_map and result.probabilities is not None
            else None
        )
        for i, (pk, row, token) in enumerate(zip(ids, cells, tokens, strict=True)):
            if columns == ["prediction"]:
                answer = f'"prediction":{row[0]!r}'
            else:
                label = row[0]
                text = quoted.get(label) or quoted.setdefault(label, json.dumps(label))
                answer = f'"label":{text}'
                if "probability" in columns:
                    answer += f',"probability":{row[1]!r}'
                if probabilities is not None:
                    pairs = ",".join(
                        f"{json.dumps(c)}:{p!r}"
                        for c, p in zip(classes, probabilities[i], strict=True)
                    )
                    answer += f',"probabilities":{{{pairs}}}'
            yield f'{{"request_id":{pk},{answer},"feedback_token":"{token}"}}'


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


def csv_stream(result: BatchResult, upload: IO[bytes]) -> Iterator[str]:
    """The uploaded rows, in order, with ``request_id``, the answer columns and
    ``feedback_token``."""
    upload.seek(0)
    text = io.TextIOWrapper(upload, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(text, strict=True)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            [*next(reader), "request_id", *csv_columns(result.signature), "feedback_token"]
        )
        answers = (
            (pk, *cells, token)
            for ids, piece, tokens in _pieces(result)
            for pk, cells, token in zip(ids, piece, tokens, strict=True)
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
