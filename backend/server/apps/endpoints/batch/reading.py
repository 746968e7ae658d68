"""Reading an uploaded CSV file: checked before anything is scored, then read in chunks.

``CsvFile.open`` checks what can be checked up front (the header against the models'
features, ragged rows, the row limit) and plans the chunks: ``BATCH_CHUNK_ROWS`` rows, fewer
when its rows are wide (a chunk holds about ``BATCH_CHUNK_BYTES`` of the file), so memory
stays flat whatever its size and shape. ``CsvFile.batches`` then reads it a chunk at a time
as the pipeline's ``Batch``es: only the columns a model or the log reads (and the label)
become text, and the label column's cells are checked as feedback is.

The columns are the models' features (their signatures name them); extra columns are
ignored and reported, a missing feature column is an error, order does not matter.
"""

from __future__ import annotations

import csv
import io
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import IO

import numpy as np
from django.conf import settings

from apps.core.errors import InvalidInput, PayloadTooLarge
from apps.endpoints.serving import feedback
from apps.endpoints.serving.pipeline import Batch
from apps.ml.runtime import Runtime

# The header is read from the first bytes of the file: up to this many, and refused past
# them (1,000 columns of 1,000-character names fit).
_HEADER_BYTES = 1024 * 1024
_BLOCK_BYTES = 4 * 1024 * 1024
_OTHER_DELIMITERS = (";", "\t", "|")


@dataclass
class CsvFile:
    """An upload whose header, columns and rows were checked, and its chunks planned."""

    upload: IO[bytes]
    header: list[str]
    features: list[str]  # every arm's features, the first arm's order first: what the log keeps
    label_column: str | None  # the column of true values, if the file has it
    target: feedback.Target  # what a true value is checked against
    plan: list[int]  # rows per chunk, in file order
    max_rows: int

    @classmethod
    def open(
        cls,
        upload: IO[bytes],
        runtimes: Sequence[Runtime],
        *,
        label_column: str | None,
        max_rows: int,
        ramp: bool = True,
    ) -> CsvFile:
        """Check ``upload`` for ``runtimes`` (one per arm; they answer alike) before anything
        is scored. ``label_column``: the true values' column, used where the file has it.
        ``ramp``: the first chunks smaller (``chunk_plan``; see ``_RAMP``)."""
        header = read_header(upload)
        features = check_columns(header, runtimes)
        row_bytes: list[np.ndarray] = []
        rows = check_field_counts(upload, len(header), row_bytes, max_rows=max_rows)
        if rows > max_rows:  # refused before any work; checked again as read
            raise _too_many_rows()
        signature = runtimes[0].signature
        return cls(
            upload=upload,
            header=header,
            features=features,
            label_column=label_column if label_column in header else None,
            target=feedback.Target(task=signature.task, classes=signature.classes),
            plan=chunk_plan(row_bytes, ramp=ramp),
            max_rows=max_rows,
        )

    @property
    def ignored_columns(self) -> list[str]:
        return [c for c in self.header if c not in self.features and c != self.label_column]

    def batches(self, first_line: int = 2) -> Iterator[Batch]:
        """The rows after the header, in chunks of ``plan``'s sizes, as text columns: only
        the features and the label (a file's other columns are tokenized, never made into
        strings). ``first_line``: the line of the first row in the file it comes from."""
        import pandas as pd  # here: single-prediction workers need not load pandas

        needed = {*self.features, *([self.label_column] if self.label_column else [])}
        self.upload.seek(0)
        positions = [i for i, name in enumerate(self.header) if name in needed]
        # Past the plan (rows the count did not see), on in chunks of the last size: a row
        # is never dropped.
        sizes = chain(self.plan, repeat(self.plan[-1] if self.plan else settings.BATCH_CHUNK_ROWS))
        read = 0
        try:
            reader = pd.read_csv(
                self.upload,
                dtype=str,
                usecols=positions,
                na_filter=False,  # cells stay text: "" and "?" are handled by the model
                skipinitialspace=True,  # adult.data writes ", " between cells
                encoding="utf-8-sig",
                iterator=True,
            )
            for size in sizes:
                try:
                    frame = reader.get_chunk(size)
                except StopIteration:
                    return
                if len(frame) == 0:  # the end (a header alone reads as one empty frame)
                    return
                read += len(frame)
                if read > self.max_rows:
                    raise _too_many_rows()
                columns = {
                    self.header[i]: frame.iloc[:, j].tolist() for j, i in enumerate(positions)
                }
                yield Batch(
                    size=len(frame),
                    columns=columns,
                    first_line=first_line,
                    truths=self._truths(columns, first_line),
                )
                first_line += len(frame)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise _unreadable(exc) from exc

    def _truths(self, columns: dict[str, list[str]], first_line: int) -> list[str | None] | None:
        """The label column's values as feedback (None where a cell is empty), each
        checked as any feedback is."""
        if self.label_column is None:
            return None
        cells = columns[self.label_column]
        # A file holds a handful of distinct label spellings: check each once (a
        # regressor's numbers are mostly distinct, and cheap to check).
        truths: dict[str, str | None] = {}
        for offset, cell in enumerate(cells):
            if cell in truths or not cell.strip():
                continue
            try:
                truths[cell] = feedback.check_value(self.target, cell)
            except InvalidInput as exc:
                raise InvalidInput(
                    f"Line {first_line + offset}, column '{self.label_column}': {exc.message}"
                ) from None
        return [truths.get(cell) for cell in cells]


def read_header(upload: IO[bytes]) -> list[str]:
    upload.seek(0)
    head = upload.read(_HEADER_BYTES)
    if not head.strip():
        raise InvalidInput("The file is empty.")
    if b"\n" not in head and upload.read(1):
        raise PayloadTooLarge(
            f"The header line is longer than {_HEADER_BYTES} bytes; send the columns the "
            "model takes."
        )
    if b"\0" in head:
        raise InvalidInput("The file is binary, not CSV text.")
    try:
        text = head.decode("utf-8-sig", errors="strict").lstrip("\r\n")
        first = next(csv.reader(io.StringIO(text), strict=True))
    except UnicodeDecodeError:
        first = None
    except csv.Error as exc:
        raise InvalidInput(f"The header is not valid CSV: {exc}.") from None
    if first is None:
        # The sniffed block may end inside a multi-byte character; decode the first line.
        try:
            first = next(csv.reader([head.split(b"\n", 1)[0].decode("utf-8-sig")]))
        except UnicodeDecodeError:
            raise InvalidInput(
                "The file is not UTF-8 text (undecodable bytes in line 1)."
            ) from None
    header = [name.strip() for name in first]
    if len(header) > settings.BATCH_MAX_COLUMNS:
        raise PayloadTooLarge(
            f"The file has more than {settings.BATCH_MAX_COLUMNS} columns "
            f"({len(header)}; BATCH_MAX_COLUMNS); send the columns the model takes."
        )
    if len(header) == 1:
        for delimiter in _OTHER_DELIMITERS:
            if delimiter in header[0]:
                raise InvalidInput(
                    f"The file seems to use {delimiter!r} between columns; send "
                    "comma-separated values."
                )
    duplicates = sorted(name for name, count in Counter(header).items() if count > 1)
    if duplicates:
        raise InvalidInput(f"Columns appear more than once: {', '.join(duplicates)}.")
    return header


def check_columns(header: list[str], runtimes: Sequence[Runtime]) -> list[str]:
    """Every arm's features (the first arm's order first); refuses a file that lacks one."""
    first = runtimes[0].signature
    features = list(dict.fromkeys(n for runtime in runtimes for n in runtime.signature.names))
    columns = set(header)
    missing = [f.name for f in first.features if f.name not in columns]
    missing += sorted(set(features) - columns - set(missing))
    if missing and len(missing) == len(features) and _looks_like_data(header):
        raise InvalidInput(
            "The first line must be a header naming the columns "
            f"({', '.join(first.names)}); it looks like data."
        )
    if missing:
        raise InvalidInput(
            f"Missing feature columns: {', '.join(missing)}.",
            details={"missing_columns": missing},
        )
    return features


def _looks_like_data(header: list[str]) -> bool:
    try:
        float(header[0])
    except ValueError:
        return False
    return True


def check_field_counts(
    upload: IO[bytes],
    width: int,
    row_bytes: list[np.ndarray] | None = None,
    max_rows: int | None = None,
) -> int:
    """Refuse ragged rows; returns the number of rows after the header. pandas' parser
    refuses a row with too many fields but pads one with too few with empty cells, which
    would shift nothing but silently blank features. Without quotes a line's fields are its
    commas plus one, counted with numpy per block; a file with quotes is checked by the csv
    module instead (slower, exact). ``row_bytes``, if given, receives every row's size,
    the header's first (in characters for a file with quotes), for ``chunk_plan``. Past
    ``max_rows`` it stops reading and answers a count past it, for the caller to refuse:
    neither the time nor the sizes kept grow with a file that is too long anyway."""
    upload.seek(0)
    line, tail, rows = 0, b"", 0
    while True:
        data = upload.read(_BLOCK_BYTES)
        if data:  # whole lines only; the rest waits for the next block
            block = tail + data
            cut = block.rfind(b"\n") + 1
            block, tail = block[:cut], block[cut:]
        elif tail:  # a last line without a newline
            block, tail = tail + b"\n", b""
        else:
            return max(rows - 1, 0)  # less the header
        if b"\0" in block:
            raise InvalidInput(f"The file holds a NUL character after line {line}.")
        if b'"' in block:
            if row_bytes is not None:
                row_bytes.clear()
            return _field_counts_with_csv(upload, width, row_bytes, max_rows)
        chars = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(chars == ord("\n"))
        commas_before = np.searchsorted(np.flatnonzero(chars == ord(",")), ends)
        fields = np.diff(commas_before, prepend=0) + 1
        starts = np.concatenate(([0], ends[:-1] + 1))
        blank = (ends - starts) <= (chars[ends - 1] == ord("\r"))
        bad = np.flatnonzero((fields != width) & ~blank)
        if bad.size:
            first = int(bad[0])
            raise InvalidInput(
                f"Line {line + first + 1} has {fields[first]} fields; the header has {width}."
            )
        line += len(ends)
        rows += int(np.count_nonzero(~blank))
        if row_bytes is not None:
            row_bytes.append((ends - starts + 1)[~blank].astype(np.int32))
        if max_rows is not None and rows - 1 > max_rows:
            return rows - 1


def _field_counts_with_csv(
    upload: IO[bytes],
    width: int,
    row_bytes: list[np.ndarray] | None = None,
    max_rows: int | None = None,
) -> int:
    upload.seek(0)
    text = io.TextIOWrapper(upload, encoding="utf-8-sig", newline="")
    reader = csv.reader(text, strict=True)
    rows, sizes = 0, array("i")
    try:
        for row in reader:
            if row and len(row) != width:
                raise InvalidInput(
                    f"Line {reader.line_num} has {len(row)} fields; the header has {width}."
                )
            if row:
                rows += 1
                if row_bytes is not None:  # the cells and their commas: close to the bytes
                    sizes.append(sum(map(len, row)) + width)
                if max_rows is not None and rows - 1 > max_rows:
                    break
        if row_bytes is not None:
            row_bytes.append(np.frombuffer(sizes, dtype=np.intc))
        return max(rows - 1, 0)  # less the header
    except (csv.Error, UnicodeDecodeError) as exc:
        raise _unreadable(exc) from exc
    finally:
        text.detach()  # leave the upload open


# The first chunk is a quarter of BATCH_CHUNK_ROWS, each next one twice the last up to it,
# where a chunk's other work overlaps the next chunk's model call (the log's rows and
# writes; an unlogged JSON answer written as it is scored): the model starts sooner, and
# a 10,000-row file is three chunks, not one. In process, a logged 10,000-row upload
# 0.261 -> 0.236 s. An unlogged CSV answer is written after the last chunk, and there the
# same chunks cost 0.103 -> 0.109 s, so it keeps whole chunks (bench/upload_stages.py,
# docs/speed.md). (An unlogged JSON answer past score.JSON_ROWS_MAX rows, kept as arrays,
# still ramps: two smaller chunks among twenty or more.)
_RAMP = 4


def chunk_plan(row_bytes: list[np.ndarray], *, ramp: bool = True) -> list[int]:
    """Rows per chunk, in file order: each chunk ``BATCH_CHUNK_ROWS`` rows at most and
    about ``BATCH_CHUNK_BYTES`` of the file at most (a row wider than that is a chunk of its
    own). The parser's buffers grow with a chunk's bytes, not its rows: 10k rows of 16.5k
    columns took a worker to 2.4 GB, and sizing chunks by the file's average row put a
    block of wide rows after narrow ones in one chunk many times the limit. ``row_bytes``
    as ``check_field_counts`` fills it, the header first."""
    sizes = np.concatenate(row_bytes)[1:] if row_bytes else np.zeros(0, dtype=np.int64)
    ends = np.cumsum(sizes)
    plan, start, limit = [], 0, settings.BATCH_CHUNK_BYTES
    rows = max(1, settings.BATCH_CHUNK_ROWS // _RAMP) if ramp else settings.BATCH_CHUNK_ROWS
    while start < len(sizes):
        before = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, before + limit, side="right"))
        stop = min(max(stop, start + 1), start + rows)
        plan.append(stop - start)
        start = stop
        rows = min(rows * 2, settings.BATCH_CHUNK_ROWS)
    return plan


def _too_many_rows() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The file has more than {settings.BATCH_MAX_ROWS} rows (BATCH_MAX_ROWS); "
        "split it into smaller files."
    )


def _unreadable(exc: Exception) -> InvalidInput:
    if isinstance(exc, UnicodeDecodeError):
        return InvalidInput("The file is not UTF-8 text (undecodable bytes).")
    return InvalidInput(f"The file is not valid CSV: {exc}")
