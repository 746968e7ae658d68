"""Batch predictions from an uploaded CSV file, for any endpoint.

The file is read in chunks of ``BATCH_CHUNK_ROWS`` rows, fewer when its rows are wide (a
chunk holds about ``BATCH_CHUNK_BYTES`` of the file), so memory stays flat whatever its
size and shape; only the columns the models read (and the label) are turned into text.
Per chunk: one check-and-convert pass per column (``codecs.frame_from_text``, by the
model's signature), one model call per algorithm (one, or the two arms of an A/B test),
one bulk write of the log rows. A bad cell on the last line leaves nothing written: on
PostgreSQL the whole upload is one transaction; on SQLite, whose single write lock that
transaction would hold for the whole upload (single predictions waited behind it, then
failed), each chunk commits on its own and a failed upload deletes what it committed.

The columns are the model's features (its signature names them); extra columns are
ignored and reported, a missing feature column is an error, order does not matter. The
target column (the algorithm's ``target_column``, else ``BATCH_LABEL_COLUMNS`` for the
endpoint) becomes each row's feedback, and the answer reports the offline evaluation:
accuracy for a classifier; MAE, RMSE and R² for a regressor (``evaluation.py``).
"""

from __future__ import annotations

import csv
import io
import json
import re
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import IO, Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from apps.core import telemetry
from apps.core.errors import InvalidInput, PayloadTooLarge
from apps.endpoints.catalogue import demo
from apps.endpoints.catalogue.selectors import sole_endpoint_name
from apps.endpoints.experiments import evaluation
from apps.endpoints.experiments.selectors import running_abtest
from apps.endpoints.models import ABTest, MLAlgorithm, MLAlgorithmStatus, MLRequest
from apps.endpoints.serving import bulk, feedback
from apps.endpoints.serving.predict import candidate_algorithms
from apps.ml import codecs
from apps.ml import registry as ml_registry
from apps.ml.codecs import ModelOutput
from apps.ml.runtime import Runtime, check_finite
from apps.ml.signature import Signature

# Picks, for n rows, the index of the arm that serves each row, given each arm's share.
AssignArms = Callable[[int, Sequence[float]], np.ndarray]

# The header is read from the first bytes of the file: up to this many, and refused past
# them (1,000 columns of 1,000-character names fit).
_HEADER_BYTES = 1024 * 1024
_BLOCK_BYTES = 4 * 1024 * 1024
_NEEDS_JSON_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_OTHER_DELIMITERS = (";", "\t", "|")


def random_arms(rows: int, shares: Sequence[float]) -> np.ndarray:
    """Each row to an arm at random, arm i with probability ``shares[i]``."""
    return np.random.default_rng().choice(len(shares), size=rows, p=shares)


@dataclass
class BatchResult:
    """What an upload produced: the per-row answers in compact arrays, in file order."""

    header: list[str]
    algorithms: list[MLAlgorithm]
    signature: Signature  # of the first arm; A/B arms answer alike (ab_testing.create)
    ignored_columns: list[str]
    label_column: str | None
    abtest: ABTest | None = None  # the A/B test that routed the rows, if any
    user_id: int | None = None  # who uploaded the file, when authenticated
    client: str | None = None  # the feedback_by of the label column's feedback
    request_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    labels: np.ndarray | None = None  # classifiers: object array of text
    probabilities: np.ndarray | None = None  # classifiers with probabilities: (rows, classes)
    values: np.ndarray | None = None  # regressors
    arms: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    evaluation: evaluation.Running = field(default_factory=evaluation.Running)
    count_rows: int = 0  # rows read so far (the row limit is checked against it)
    outputs: list[ModelOutput] = field(default_factory=list)  # per chunk, until joined
    arm_chunks: list[np.ndarray] = field(default_factory=list)

    logged: bool = True  # each row is an MLRequest with a request_id and a feedback_token
    max_rows: int = 0  # the most rows it may have (BATCH_MAX_ROWS, or a batch job's piece)

    @property
    def count(self) -> int:
        return len(self.request_ids) if self.logged else self.count_rows


def score_csv(
    *,
    upload: IO[bytes],
    endpoint_name: str | None,
    status: str,
    version: str | None = None,
    assign_arms: AssignArms | None = None,
    user_id: int | None = None,
    client: str | None = None,
    arms: Arms | None = None,
    log: bool = True,
    first_line: int = 2,
    label_column: str | None = None,
    max_rows: int | None = None,
) -> BatchResult:
    """Predict every row of the CSV ``upload`` and log each one; see the module docstring.
    ``assign_arms`` splits rows between A/B arms (default: ``random_arms``). ``user_id``:
    the authenticated client, recorded on every row; ``client``: who the feedback of the
    label column is from (``policy.Actor.label``).

    For a piece of a batch job (``jobs.py``): ``arms`` as ``select_arms`` chose them when
    the job was submitted (a promotion meanwhile does not change the model mid-file),
    ``log=False`` to write no log rows, ``first_line`` the piece's first line in the file."""
    demo.ensure_registered()
    registry = ml_registry.get_registry()
    endpoint_name = endpoint_name or sole_endpoint_name()
    abtest, algorithms, shares = arms or select_arms(endpoint_name, status, version)
    runtimes = [registry.get(a) for a in algorithms]
    label_column = (
        label_column
        or algorithms[0].target_column
        or settings.BATCH_LABEL_COLUMNS.get(endpoint_name)
        or None
    )
    row_limit = max_rows or settings.BATCH_MAX_ROWS
    header = read_header(upload)
    features = check_columns(header, runtimes)
    row_bytes: list[np.ndarray] = []
    rows = check_field_counts(upload, len(header), row_bytes, max_rows=row_limit)
    if rows > row_limit:  # refused before any work; checked again as read
        raise _too_many_rows()
    plan = chunk_plan(row_bytes)
    result = BatchResult(
        logged=log,
        max_rows=row_limit,
        header=header,
        algorithms=algorithms,
        signature=runtimes[0].signature,
        ignored_columns=[c for c in header if c not in features and c != label_column],
        label_column=label_column if label_column in header else None,
        abtest=abtest,
        user_id=user_id,
        client=client,
    )
    assign = assign_arms or random_arms
    split = lambda n: assign(n, shares)  # noqa: E731
    if not log:
        _score_chunks(upload, result, runtimes, split, plan, first_line=first_line)
    elif _in_pieces():
        _score_chunks(upload, result, runtimes, split, plan, first_line, pieces=True)
    else:
        with transaction.atomic():
            _score_chunks(upload, result, runtimes, split, plan, first_line)
    if result.count == 0:
        raise InvalidInput("The file has a header but no rows.")
    telemetry.count_scored(
        endpoint=endpoint_name,
        versions=[(a.name, a.version) for a in algorithms],
        rows=np.bincount(result.arms, minlength=len(algorithms)).tolist(),
        status=status,
    )
    return result


# The A/B test that routes the rows (or None), the algorithms, and each one's share.
Arms = tuple[ABTest | None, list[MLAlgorithm], list[float]]


def select_arms(endpoint_name: str, status: str, version: str | None) -> Arms:
    """The algorithms that serve the file and each one's share of the rows: with status
    ``ab_testing``, the arms of the endpoint's running test at its traffic split (as
    ``ab_testing.route`` does for single predictions); otherwise as predict selects."""
    if status == MLAlgorithmStatus.Status.AB_TESTING and version is None:
        abtest = running_abtest(endpoint_name=endpoint_name)
        if abtest is not None:
            arms = list(abtest.arms)
            return abtest, arms, [1 - abtest.arm_2_share, abtest.arm_2_share]
    algorithms = candidate_algorithms(endpoint_name=endpoint_name, status=status, version=version)
    return None, algorithms, [1 / len(algorithms)] * len(algorithms)


@dataclass
class _Chunk:
    first_line: int
    columns: dict[str, Sequence[str]]
    size: int
    # Filled in by _decode: which arm serves each row, and per arm its rows and their
    # encoded form (Runtime.encode).
    arms: np.ndarray | None = None
    work: list[tuple[np.ndarray, Any]] = field(default_factory=list)


def _score_chunks(
    upload: IO[bytes],
    result: BatchResult,
    runtimes: list[Runtime],
    assign_arms: Callable[[int], np.ndarray],
    plan: list[int],
    first_line: int = 2,
    *,
    pieces: bool = False,
) -> None:
    """Three things run at once: the model scores chunk k+1 on one thread, this thread
    builds chunk k's log rows, and the writer thread writes chunk k-1. scikit-learn's tree
    code, ONNX Runtime and the database (see bulk.py) release the GIL, so on two cores
    their work overlaps the Python work instead of adding to it."""
    ids: list[Future[np.ndarray]] = []
    writer = None if not result.logged else bulk.BackgroundWriter(pieces=pieces)
    try:
        _run_chunks(upload, result, runtimes, assign_arms, plan, first_line, writer, ids)
    except BaseException:
        if pieces and writer is not None:
            _undo(writer.written)
        raise
    if ids:
        result.request_ids = np.concatenate([written.result() for written in ids])
    if result.outputs:
        result.arms = np.concatenate(result.arm_chunks)
        _join_outputs(result)


def _in_pieces() -> bool:
    """SQLite, outside a transaction of the caller's (a test's, say): commit per chunk."""
    return connection.vendor == "sqlite" and connection.get_autocommit()


def _undo(written: list[np.ndarray]) -> None:
    """Delete the chunks a failed upload committed (SQLite), with their feedback's share of
    the tally, one chunk per transaction. Each chunk's ids are a range reserved for it."""
    for ids in written:
        if ids.size:
            feedback.delete_requests(
                MLRequest.objects.filter(pk__gte=int(ids[0]), pk__lte=int(ids[-1]))
            )


def _run_chunks(
    upload: IO[bytes],
    result: BatchResult,
    runtimes: list[Runtime],
    assign_arms: Callable[[int], np.ndarray],
    plan: list[int],
    first_line: int,
    writer: bulk.BackgroundWriter | None,
    ids: list[Future[np.ndarray]],
) -> None:
    pending: tuple[_Chunk, Future[ModelOutput]] | None = None

    def finish(chunk: _Chunk, scoring: Future[ModelOutput]) -> None:
        rows = _log_rows(chunk, scoring, result)
        if writer is not None:
            ids.append(writer.submit(rows))

    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-model") as model,
        writer or nullcontext(),
    ):
        needed = {
            *_logged_features(result),
            *([result.label_column] if result.label_column else []),
        }
        for chunk in _chunks(upload, result.header, needed, plan, first_line):
            if result.count_rows + chunk.size > result.max_rows:
                raise _too_many_rows()
            chunk.arms = assign_arms(chunk.size) if len(runtimes) > 1 else None
            _decode(chunk, runtimes)
            scoring = model.submit(_predict, chunk, runtimes)
            if pending is not None:
                finish(*pending)
            pending = (chunk, scoring)
            result.count_rows += chunk.size
        if pending is not None:
            finish(*pending)


def _join_outputs(result: BatchResult) -> None:
    outputs, result.outputs = result.outputs, []
    if outputs[0].labels is not None:
        result.labels = np.concatenate([o.labels for o in outputs if o.labels is not None])
    if outputs[0].probabilities is not None:
        result.probabilities = np.concatenate(
            [o.probabilities for o in outputs if o.probabilities is not None]
        )
    if outputs[0].values is not None:
        result.values = np.concatenate([o.values for o in outputs if o.values is not None])


def _decode(chunk: _Chunk, runtimes: list[Runtime]) -> None:
    for arm, runtime in enumerate(runtimes):
        # Every arm checks the whole chunk, so a bad cell is reported with its line
        # whichever arm its row went to; then each arm predicts its own rows in one call.
        signature = runtime.signature
        frame = codecs.frame_from_text(
            {f: chunk.columns[f] for f in signature.names}, signature, first_line=chunk.first_line
        )
        rows = np.arange(chunk.size) if chunk.arms is None else np.flatnonzero(chunk.arms == arm)
        mine = frame if chunk.arms is None else frame.take(rows)
        # Encoded here, on the request's thread: the model's thread then runs the model
        # call alone, which releases the GIL while this thread builds the log rows.
        chunk.work.append((rows, runtime.encode(mine) if rows.size else None))


def _predict(chunk: _Chunk, runtimes: list[Runtime]) -> ModelOutput:
    """The chunk's answers in file order, each arm predicting its own rows in one call."""
    if chunk.arms is None:
        [(_, encoded)] = chunk.work
        return runtimes[0].predict_encoded(encoded)
    parts = [
        (rows, runtime.predict_encoded(encoded))
        for runtime, (rows, encoded) in zip(runtimes, chunk.work, strict=True)
        if rows.size
    ]
    return _interleave(parts, chunk.size)


def _interleave(parts: list[tuple[np.ndarray, ModelOutput]], size: int) -> ModelOutput:
    first = parts[0][1]
    out = ModelOutput(
        labels=None if first.labels is None else np.empty(size, dtype=object),
        probabilities=None
        if first.probabilities is None
        else np.empty((size, first.probabilities.shape[1])),
        values=None if first.values is None else np.empty(size),
        imputed=None if first.imputed is None else [[] for _ in range(size)],
        engine=first.engine,
    )
    for rows, part in parts:
        if out.labels is not None and part.labels is not None:
            out.labels[rows] = part.labels
        if out.probabilities is not None and part.probabilities is not None:
            out.probabilities[rows] = part.probabilities
        if out.values is not None and part.values is not None:
            out.values[rows] = part.values
        if out.imputed is not None and part.imputed is not None:
            for i, filled in zip(rows.tolist(), part.imputed, strict=True):
                out.imputed[i] = filled
    return out


def _log_rows(
    chunk: _Chunk, scoring: Future[ModelOutput], result: BatchResult
) -> list[bulk.LogRow]:
    """Attach one chunk's feedback and build its log rows."""
    output = scoring.result()
    check_finite(output, first_line=chunk.first_line)
    arms = chunk.arms if chunk.arms is not None else np.zeros(chunk.size, np.int64)
    algorithm_ids = np.array([a.pk for a in result.algorithms])[arms].tolist()
    signature = result.signature
    truths = _feedback(chunk, result, output)
    if not result.logged:  # a batch job's piece without the log: answers only
        result.outputs.append(output)
        result.arm_chunks.append(arms)
        return []
    inputs = _input_json(chunk, _logged_features(result))
    abtest_id = result.abtest.pk if result.abtest else None
    responses = codecs.answer_texts(signature, output)
    answered = codecs.response_texts(output)
    given_by = [None if truth is None else result.client for truth in truths]
    rows = list(
        map(
            bulk.LogRow,
            inputs,
            responses,
            answered,
            truths,
            algorithm_ids,
            repeat(abtest_id),
            repeat(result.user_id),
            given_by,
        )
    )
    result.outputs.append(output)
    result.arm_chunks.append(arms)
    return rows


def _logged_features(result: BatchResult) -> list[str]:
    """The feature columns every row's logged input holds: all arms' features."""
    names = list(result.signature.names)
    for algorithm in result.algorithms[1:]:
        names += [f["name"] for f in algorithm.features if f["name"] not in names]
    return names


def _feedback(chunk: _Chunk, result: BatchResult, output: ModelOutput) -> list[str | None]:
    """The label column's values as feedback (None where a cell is empty), checked as any
    feedback is; the running evaluation counts them."""
    if result.label_column is None:
        return [None] * chunk.size
    cells = chunk.columns[result.label_column]
    target = feedback.Target(task=result.signature.task, classes=result.signature.classes)
    # A file holds a handful of distinct label spellings: check each once (a regressor's
    # numbers are mostly distinct, and cheap to check).
    truths: dict[str, str | None] = {}
    for offset, cell in enumerate(cells):
        if cell in truths or not cell.strip():
            continue
        try:
            truths[cell] = feedback.check_value(target, cell)
        except InvalidInput as exc:
            raise InvalidInput(
                f"Line {chunk.first_line + offset}, column '{result.label_column}': {exc.message}"
            ) from None
    given = [truths.get(cell) for cell in cells]
    result.evaluation.add(result.signature.task, given, output)
    return given


def _input_json(chunk: _Chunk, features: Sequence[str]) -> list[str]:
    """Each row's input record as JSON text: the feature cells as uploaded (less the spaces
    after commas, which the parser drops).

    Built with a template when no cell needs escaping (nearly always); ``json.dumps``
    otherwise. This is a third of the cost of ``json.dumps`` per row."""
    columns = [chunk.columns[f] for f in features]
    if any(_NEEDS_JSON_ESCAPE.search("".join(column)) for column in columns):
        return [
            json.dumps(dict(zip(features, row, strict=True))) for row in zip(*columns, strict=True)
        ]
    names = [json.dumps(f).replace("%", "%%") for f in features]
    template = "{" + ",".join(f'{name}:"%s"' for name in names) + "}"
    return [template % row for row in zip(*columns, strict=True)]


# -- reading the file --------------------------------------------------------------------


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


def check_columns(header: list[str], runtimes: list[Runtime]) -> set[str]:
    first = runtimes[0].signature
    features = {name for runtime in runtimes for name in runtime.signature.names}
    columns = set(header)
    missing = [f.name for f in first.features if f.name not in columns]
    missing += sorted(features - columns - set(missing))
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


def chunk_plan(row_bytes: list[np.ndarray]) -> list[int]:
    """Rows per chunk, in file order: each chunk ``BATCH_CHUNK_ROWS`` rows at most and
    about ``BATCH_CHUNK_BYTES`` of the file at most (a row wider than that is a chunk of its
    own). The parser's buffers grow with a chunk's bytes, not its rows: 10k rows of 16.5k
    columns took a worker to 2.4 GB, and sizing chunks by the file's average row put a
    block of wide rows after narrow ones in one chunk many times the limit. ``row_bytes``
    as ``check_field_counts`` fills it, the header first."""
    sizes = np.concatenate(row_bytes)[1:] if row_bytes else np.zeros(0, dtype=np.int64)
    ends = np.cumsum(sizes)
    plan, start, limit = [], 0, settings.BATCH_CHUNK_BYTES
    while start < len(sizes):
        before = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, before + limit, side="right"))
        stop = min(max(stop, start + 1), start + settings.BATCH_CHUNK_ROWS)
        plan.append(stop - start)
        start = stop
    return plan


def _chunks(
    upload: IO[bytes], header: list[str], needed: set[str], plan: list[int], first_line: int = 2
) -> Iterator[_Chunk]:
    """The rows after the header, in chunks of ``plan``'s sizes, as text columns: only the
    ``needed`` ones (a file's other columns are tokenized, never made into strings)."""
    import pandas as pd  # here: single-prediction workers need not load pandas

    upload.seek(0)
    positions = [i for i, name in enumerate(header) if name in needed]
    # Past the plan (rows the count did not see), on in chunks of the last size: a row is
    # never dropped.
    sizes = chain(plan, repeat(plan[-1] if plan else settings.BATCH_CHUNK_ROWS))
    try:
        reader = pd.read_csv(
            upload,
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
            if len(frame) == 0:  # the end of the file (a header alone reads as one empty frame)
                return
            columns = {header[i]: frame.iloc[:, j].tolist() for j, i in enumerate(positions)}
            yield _Chunk(first_line=first_line, columns=columns, size=len(frame))
            first_line += len(frame)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise _unreadable(exc) from exc


def _too_many_rows() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The file has more than {settings.BATCH_MAX_ROWS} rows (BATCH_MAX_ROWS); "
        "split it into smaller files."
    )


def _unreadable(exc: Exception) -> InvalidInput:
    if isinstance(exc, UnicodeDecodeError):
        return InvalidInput("The file is not UTF-8 text (undecodable bytes).")
    return InvalidInput(f"The file is not valid CSV: {exc}")
