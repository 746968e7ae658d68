"""Streaming the answer to a batch, as JSON or as the uploaded CSV plus columns.

Both are generators over the compact arrays of a ``ScoredBatch`` (and, for CSV, a second
pass over the uploaded file), so a million-row answer never exists in memory at once. The
answer's fields, their order and their encoding are the model's ``Answer``
(``apps/ml/answer.py``), between the row's ``request_id`` and its ``feedback_token`` when
the rows were logged:

- JSON: ``label``, ``probability`` (binary), ``probabilities`` (a map), or ``prediction``;
- CSV: ``label``, then ``probability`` for a binary classifier or ``probability_<class>``
  per class for a multiclass one; ``prediction`` for a regressor.

In a CSV answer, unless ``CSV_ESCAPE_FORMULAS`` is off, every cell a spreadsheet would run
as a formula, uploaded (the header too) or a label, gets a leading ``'``
(``formulas.py``). The JSON answer is never changed.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings

from apps.endpoints.batch import formulas
from apps.endpoints.serving import feedback
from apps.endpoints.serving.pipeline import ScoredBatch
from apps.ml.answer import ModelOutput

_ROWS_PER_PIECE = 5_000
_SCAN_BYTES = 4 * 1024 * 1024


def summary(result: ScoredBatch) -> dict[str, Any]:
    metrics = result.evaluation.summary(result.answer.signature.task)
    return {
        "count": result.count,
        "logged": result.logged,
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


def _csv_rows(result: ScoredBatch, labels: _Labels) -> Iterator[list[tuple[Any, ...]]]:
    """Per piece, each row's answer cells (with its id and token when logged), the labels
    ``labels`` escapes escaped."""
    for piece in _pieces(result):
        cells = result.answer.csv_rows(piece.output)
        if labels.escaped:
            cells = formulas.safe_labels(cells, labels.escaped)
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
    if result.json_texts is not None:  # written as the batches were scored
        for n, text in enumerate(result.json_text()):
            yield ("," if n else "") + text
        yield "]}"
        return
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
    Cells that start like a formula are escaped unless ``CSV_ESCAPE_FORMULAS`` is off (see
    the module doc).

    A file without quotes or carriage returns (most are) is answered line by line: each
    line is its record as the csv module would write it again, so the answer columns are
    appended to the line as it is. Parsing and re-writing every cell cost a batch job
    more CPU than its model (bench/jobs_bench.py). Any other file goes through the csv
    module."""
    escape = bool(settings.CSV_ESCAPE_FORMULAS)
    form = _form(upload, escape)
    labels = _Labels.of(result, escape)
    if form.plain:
        yield from _plain_csv_stream(result, upload, header, escape, labels)
        return
    upload.seek(0)
    text = io.TextIOWrapper(upload, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(text, strict=True)
        out = _CsvText(quote_cr=form.lone_cr or labels.cr)
        names = next(reader)
        if header:
            out.write([*_safe(names, form.formulas), *answer_header(result)])
        answers = (row for piece in _csv_rows(result, labels) for row in piece)
        for n, row in enumerate(row for row in reader if row):  # blank lines were skipped
            out.write([*_safe(row, form.formulas), *next(answers)])
            if n % _ROWS_PER_PIECE == _ROWS_PER_PIECE - 1:
                yield out.take()
        yield out.take()
    finally:
        text.detach()


class _CsvText:
    """Rows written as CSV text, each ended by a line feed, taken a piece at a time.

    Python's csv module quotes a cell that holds a character of its line terminator
    ("\n" here), so it leaves a lone carriage return bare, where readers (spreadsheets)
    end the row: the rest of the cell would be read as a row of its own. Where a cell may
    hold one (``quote_cr``), a row that does is written with "\r\n", which quotes it,
    and then ended by "\n"; elsewhere no cell is looked at."""

    def __init__(self, *, quote_cr: bool) -> None:
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer, lineterminator="\n")
        self.crlf = csv.writer(self.buffer, lineterminator="\r\n") if quote_cr else None

    def write(self, row: Sequence[Any]) -> None:
        if self.crlf is not None and any(isinstance(c, str) and "\r" in c for c in row):
            self.crlf.writerow(row)
            self.buffer.seek(self.buffer.tell() - 2)  # a StringIO's position: characters
            self.buffer.write("\n")
            self.buffer.truncate()
        else:
            self.writer.writerow(row)

    def write_all(self, rows: Sequence[Sequence[Any]]) -> None:
        if self.crlf is None:
            self.writer.writerows(rows)
        else:
            for row in rows:
                self.write(row)

    def take(self) -> str:
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text


@dataclass(frozen=True)
class _Form:
    plain: bool  # no quote, no carriage return: a line is a record, cells lie between commas
    lone_cr: bool  # a carriage return before no line feed: in a quoted cell
    formulas: bool  # not plain, and a cell may start like a formula (escape cell by cell)


def _form(upload: IO[bytes], escape: bool) -> _Form:
    """What a scan of the file finds (searches for a byte, fast). A plain file's cells are
    escaped as bytes, without a scan here; another's, cell by cell, only where a second
    scan finds a cell that may need it: most files' cells never start like a formula."""
    upload.seek(0)
    quote = cr = lone_cr = False
    while block := upload.read(_SCAN_BYTES):
        quote = quote or b'"' in block
        if b"\r" in block:
            cr = True
            # A CR at the end of a block counts as lone: the safe side.
            lone_cr = lone_cr or block.count(b"\r") != block.count(b"\r\n")
    plain = not (quote or cr)
    return _Form(plain, lone_cr, escape and not plain and _may_start_formulas(upload))


def _may_start_formulas(upload: IO[bytes]) -> bool:
    upload.seek(0)
    before = b""  # the last byte of the block before: a cell may start right after it
    while block := upload.read(_SCAN_BYTES):
        if not before:
            block = block.removeprefix(codecs.BOM_UTF8)
        if formulas.may_start_cells(before + block, file_start=not before):
            return True
        before = block[-1:]
    return False


@dataclass(frozen=True)
class _Labels:
    """What a batch's labels ask of its CSV answer, found once among its distinct labels
    (a model has few): which to escape (each to its escaped form), and whether one holds
    a carriage return."""

    escaped: dict[str, str]
    cr: bool

    @classmethod
    def of(cls, result: ScoredBatch, escape: bool) -> _Labels:
        labels = result.output.labels
        distinct: set[str] = set()
        for start in range(0, 0 if labels is None else len(labels), _ROWS_PER_PIECE):
            assert labels is not None
            distinct.update(labels[start : start + _ROWS_PER_PIECE].tolist())
        escaped = {label: formulas.escaped(label) for label in distinct} if escape else {}
        return cls(
            escaped={label: safe for label, safe in escaped.items() if safe != label},
            cr=any("\r" in label for label in distinct),
        )


def _answer_lines(result: ScoredBatch, labels: _Labels) -> Iterator[list[str]]:
    """The answer columns of each row as CSV text, a piece of rows at a time."""
    out = _CsvText(quote_cr=labels.cr)
    for rows in _csv_rows(result, labels):
        out.write_all(rows)
        lines = out.take().split("\n")[:-1]
        if len(lines) != len(rows):  # a label with a line break: written row by row
            lines = []
            for row in rows:
                out.write(row)
                lines.append(out.take()[:-1])
        yield lines


def _plain_csv_stream(
    result: ScoredBatch, upload: IO[bytes], header: bool, escape: bool, labels: _Labels
) -> Iterator[str]:
    upload.seek(0)
    names = upload.readline().decode("utf-8-sig").rstrip("\n")
    if header:
        names = ",".join(_safe(names.split(","), escape))
        out = _CsvText(quote_cr=False)
        out.write(answer_header(result))
        yield f"{names},{out.take()}"
    # readline, not iteration: a Django upload's __iter__ starts again from the top.
    records = (line for line in iter(upload.readline, b"") if line != b"\n")
    for answers in _answer_lines(result, labels):
        lines = [line.rstrip(b"\n") for _, line in zip(answers, records, strict=False)]
        if len(lines) != len(answers):
            raise ValueError("the file has fewer records than the ScoredBatch has rows")
        block = b"\n".join(lines)
        if escape:
            block = formulas.safe_lines(block)
        texts = block.decode().split("\n")
        yield "".join(f"{text},{answer}\n" for text, answer in zip(texts, answers, strict=True))
    if next(records, None) is not None:
        raise ValueError("the file has more records than the ScoredBatch has rows")


def _safe(cells: list[str], escape: bool) -> list[str]:
    return formulas.safe_cells(cells) if escape else cells
