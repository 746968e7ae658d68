"""Batch predictions from an uploaded CSV file.

The file is read in chunks of ``BATCH_CHUNK_ROWS`` rows, so memory stays flat whatever its
size. Per chunk: one validation and encoding pass per column, one model call per algorithm
(one, or the two arms of an A/B test), one bulk write of the log rows. The whole upload is
one transaction: a bad cell on the last line leaves nothing written.

The columns are the algorithm's own features (the wrapper knows them); extra columns are
ignored and reported, a missing feature column is an error, order does not matter. A label
column (``BATCH_LABEL_COLUMNS`` per endpoint) becomes each row's feedback and the answer
reports accuracy.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from typing import IO

import numpy as np
from django.conf import settings
from django.db import transaction

from apps.endpoints import bulk, selectors, services
from apps.endpoints.errors import InvalidInput, PayloadTooLarge
from apps.endpoints.models import ABTest, MLAlgorithm, MLAlgorithmStatus
from apps.ml import registry as ml_registry
from apps.ml.income_classifier import IncomeClassifier
from apps.ops import metrics as ops_metrics

# Picks, for n rows, the index of the arm that serves each row, given each arm's share.
AssignArms = Callable[[int, Sequence[float]], np.ndarray]

_SNIFF_BYTES = 64 * 1024
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
    ignored_columns: list[str]
    label_column: str | None
    abtest: ABTest | None = None  # the A/B test that routed the rows, if any
    user_id: int | None = None  # who uploaded the file, when authenticated
    client: str | None = None  # the feedback_by of the label column's feedback
    request_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    probabilities: np.ndarray = field(default_factory=lambda: np.empty(0))
    labels: list[str] = field(default_factory=list)
    arms: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    labelled: int = 0
    correct: int = 0
    count_rows: int = 0  # rows read so far (the row limit is checked against it)
    arm_chunks: list[np.ndarray] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.labels)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


def score_csv(
    *,
    upload: IO[bytes],
    endpoint_name: str | None,
    status: str,
    version: str | None = None,
    assign_arms: AssignArms | None = None,
    user_id: int | None = None,
    client: str | None = None,
) -> BatchResult:
    """Predict every row of the CSV ``upload`` and log each one; see the module docstring.
    ``assign_arms`` splits rows between A/B arms (default: ``random_arms``). ``user_id``:
    the authenticated client, recorded on every row; ``client``: who the feedback of the
    label column is from (``feedback.Actor.label``)."""
    registry = ml_registry.get_registry()
    registry.ensure_declared()
    endpoint_name = endpoint_name or selectors.sole_endpoint_name()
    abtest, algorithms, shares = _arms(endpoint_name, status, version)
    wrappers = [registry.get(a) for a in algorithms]
    label_column = settings.BATCH_LABEL_COLUMNS.get(endpoint_name)
    header = _read_header(upload)
    features = _check_columns(header, wrappers)
    rows = _check_field_counts(upload, len(header))
    if rows > settings.BATCH_MAX_ROWS:  # refused before any work; checked again as read
        raise _too_many_rows()
    result = BatchResult(
        header=header,
        algorithms=algorithms,
        ignored_columns=[c for c in header if c not in features and c != label_column],
        label_column=label_column if label_column in header else None,
        abtest=abtest,
        user_id=user_id,
        client=client,
    )
    assign = assign_arms or random_arms
    with transaction.atomic():
        _score_chunks(upload, result, wrappers, lambda n: assign(n, shares))
    if result.count == 0:
        raise InvalidInput("The file has a header but no rows.")
    ops_metrics.count_batch_predictions(
        endpoint=endpoint_name, algorithms=algorithms, arms=result.arms, status=status
    )
    return result


def _arms(
    endpoint_name: str, status: str, version: str | None
) -> tuple[ABTest | None, list[MLAlgorithm], list[float]]:
    """The algorithms that serve the file and each one's share of the rows: with status
    ``ab_testing``, the arms of the endpoint's running test at its traffic split (as
    ``ab_testing.route`` does for single predictions); otherwise as predict selects."""
    if status == MLAlgorithmStatus.Status.AB_TESTING and version is None:
        abtest = selectors.running_abtest(endpoint_name=endpoint_name)
        if abtest is not None:
            arms = [abtest.parent_mlalgorithm_1, abtest.parent_mlalgorithm_2]
            return abtest, arms, [1 - abtest.arm_2_share, abtest.arm_2_share]
    algorithms = services.candidate_algorithms(
        endpoint_name=endpoint_name, status=status, version=version
    )
    return None, algorithms, [1 / len(algorithms)] * len(algorithms)


@dataclass
class _Chunk:
    first_line: int
    columns: dict[str, Sequence[str]]
    size: int
    # Filled in by _encode: per arm, its rows and their encoded matrix.
    arms: np.ndarray | None = None
    work: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    # Row offset -> the features filled with the training mode, for the few rows with any.
    imputed: dict[int, list[str]] = field(default_factory=dict)


def _score_chunks(
    upload: IO[bytes],
    result: BatchResult,
    wrappers: list[IncomeClassifier],
    assign_arms: Callable[[int], np.ndarray],
) -> None:
    """Three things run at once: the model scores chunk k+1 on one thread, this thread
    labels chunk k and builds its log rows, and the writer thread writes chunk k-1.
    scikit-learn's tree code, ONNX Runtime and the database (see bulk.py) release the GIL,
    so on two cores their work overlaps the Python work instead of adding to it."""
    ids: list[Future[np.ndarray]] = []
    probabilities: list[np.ndarray] = []
    pending: tuple[_Chunk, Future[np.ndarray]] | None = None
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-model") as model,
        bulk.BackgroundWriter() as writer,
    ):
        for chunk in _chunks(upload, result.header):
            if result.count_rows + chunk.size > settings.BATCH_MAX_ROWS:
                raise _too_many_rows()
            chunk.arms = assign_arms(chunk.size) if len(wrappers) > 1 else None
            _encode(chunk, wrappers)
            scoring = model.submit(_predict, chunk, wrappers)
            if pending is not None:
                ids.append(writer.submit(_log_rows(*pending, result, wrappers[0], probabilities)))
            pending = (chunk, scoring)
            result.count_rows += chunk.size
        if pending is not None:
            ids.append(writer.submit(_log_rows(*pending, result, wrappers[0], probabilities)))
    if ids:
        result.request_ids = np.concatenate([written.result() for written in ids])
        result.probabilities = np.concatenate(probabilities)
        result.arms = np.concatenate(result.arm_chunks)


def _encode(chunk: _Chunk, wrappers: list[IncomeClassifier]) -> None:
    for arm, wrapper in enumerate(wrappers):
        # Every arm validates the whole chunk, so a bad cell is reported with its line
        # whichever arm its row went to; then each arm predicts its own rows in one call.
        matrix, filled = wrapper.preprocessing.encode_columns(
            {f: chunk.columns[f] for f in wrapper.features}, first_line=chunk.first_line
        )
        rows = np.arange(chunk.size) if chunk.arms is None else np.flatnonzero(chunk.arms == arm)
        chunk.work.append((rows, matrix[rows]))
        for i, j in zip(*np.nonzero(filled[rows]), strict=True):
            chunk.imputed.setdefault(int(rows[i]), []).append(wrapper.features[j])


def _predict(chunk: _Chunk, wrappers: list[IncomeClassifier]) -> np.ndarray:
    probabilities = np.empty(chunk.size)
    for wrapper, (rows, matrix) in zip(wrappers, chunk.work, strict=True):
        if rows.size:
            probabilities[rows] = wrapper.predict_proba(matrix)
    return probabilities


def _log_rows(
    chunk: _Chunk,
    scoring: Future[np.ndarray],
    result: BatchResult,
    wrapper: IncomeClassifier,
    probabilities: list[np.ndarray],
) -> list[bulk.Row]:
    """Label one chunk, attach feedback and build its log rows."""
    chunk_probabilities = scoring.result()
    arms = chunk.arms if chunk.arms is not None else np.zeros(chunk.size, np.int64)
    algorithm_ids = np.array([a.pk for a in result.algorithms])[arms].tolist()
    labels = wrapper.labels_for(chunk_probabilities)
    feedback = _feedback(chunk, result, wrapper, labels)
    inputs = _input_json(chunk, wrapper.features)
    abtest_id = result.abtest.pk if result.abtest else None
    responses = _responses_json(chunk_probabilities.tolist(), labels, chunk.imputed)
    given_by = [None if truth is None else result.client for truth in feedback]
    rows = list(
        zip(
            inputs,
            responses,
            labels,
            feedback,
            algorithm_ids,
            repeat(abtest_id),
            repeat(result.user_id),
            given_by,
        )
    )
    probabilities.append(chunk_probabilities)
    result.arm_chunks.append(arms)
    result.labels.extend(labels)
    return rows


def _feedback(
    chunk: _Chunk, result: BatchResult, wrapper: IncomeClassifier, labels: list[str]
) -> list[str | None]:
    if result.label_column is None:
        return [None] * chunk.size
    cells = chunk.columns[result.label_column]
    # A file holds a handful of distinct label spellings: normalise each once.
    truths = {cell: wrapper.normalise_label(cell) for cell in set(cells) if cell.strip()}
    for offset, cell in enumerate(cells):
        if cell in truths and truths[cell] is None:
            raise InvalidInput(
                f"Line {chunk.first_line + offset}, column '{result.label_column}': "
                f"'{cell.strip()[:40]}' is not a label (expected one of "
                f"{', '.join(wrapper.classes)}).",
            )
    feedback = [truths.get(cell) for cell in cells]
    result.labelled += sum(truth is not None for truth in feedback)
    result.correct += sum(truth == label for truth, label in zip(feedback, labels, strict=True))
    return feedback


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
    template = "{" + ",".join(f'{json.dumps(f)}:"%s"' for f in features) + "}"
    return [template % row for row in zip(*columns, strict=True)]


def _responses_json(
    probabilities: list[float], labels: list[str], imputed: dict[int, list[str]]
) -> list[str]:
    """Each row's ``Prediction`` (income_classifier/base.py) as JSON text: a template per
    label (escaped for JSON, and its % for the template), the few rows with imputed
    features patched after."""
    templates = {
        label: '{"probability":%r,"label":'
        + json.dumps(label).replace("%", "%%")
        + ',"status":"OK","imputed":[]}'
        for label in set(labels)
    }
    responses = [templates[label] % p for p, label in zip(probabilities, labels, strict=True)]
    for i, filled in imputed.items():
        responses[i] = responses[i].removesuffix("[]}") + json.dumps(filled) + "}"
    return responses


# -- reading the file --------------------------------------------------------------------


def _read_header(upload: IO[bytes]) -> list[str]:
    upload.seek(0)
    head = upload.read(_SNIFF_BYTES)
    if not head.strip():
        raise InvalidInput("The file is empty.")
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
    if len(header) == 1:
        for delimiter in _OTHER_DELIMITERS:
            if delimiter in header[0]:
                raise InvalidInput(
                    f"The file seems to use {delimiter!r} between columns; send "
                    "comma-separated values."
                )
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise InvalidInput(f"Columns appear more than once: {', '.join(duplicates)}.")
    return header


def _check_columns(header: list[str], wrappers: list[IncomeClassifier]) -> set[str]:
    features = {f for wrapper in wrappers for f in wrapper.features}
    missing = [f for f in wrappers[0].features if f not in header]
    missing += sorted(features - set(header) - set(missing))
    if missing and len(missing) == len(features) and _looks_like_data(header):
        raise InvalidInput(
            "The first line must be a header naming the columns "
            f"({', '.join(wrappers[0].features)}); it looks like data."
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


def _check_field_counts(upload: IO[bytes], width: int) -> int:
    """Refuse ragged rows; returns the number of rows after the header. pandas' parser
    refuses a row with too many fields but pads one with too few with empty cells, which
    would shift nothing but silently blank features. Without quotes a line's fields are its
    commas plus one, counted with numpy per block; a file with quotes is checked by the csv
    module instead (slower, exact)."""
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
            return _check_field_counts_with_csv(upload, width)
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


def _check_field_counts_with_csv(upload: IO[bytes], width: int) -> int:
    upload.seek(0)
    text = io.TextIOWrapper(upload, encoding="utf-8-sig", newline="")
    reader = csv.reader(text, strict=True)
    rows = 0
    try:
        for row in reader:
            if row and len(row) != width:
                raise InvalidInput(
                    f"Line {reader.line_num} has {len(row)} fields; the header has {width}."
                )
            rows += bool(row)
        return max(rows - 1, 0)  # less the header
    except (csv.Error, UnicodeDecodeError) as exc:
        raise _unreadable(exc) from exc
    finally:
        text.detach()  # leave the upload open


def _chunks(upload: IO[bytes], header: list[str]) -> Iterator[_Chunk]:
    """The rows after the header, ``BATCH_CHUNK_ROWS`` at a time, as text columns."""
    import pandas as pd  # here: single-prediction workers need not load pandas

    upload.seek(0)
    first_line = 2
    try:
        frames = pd.read_csv(
            upload,
            dtype=str,
            na_filter=False,  # cells stay text: "" and "?" are handled by the model
            skipinitialspace=True,  # adult.data writes ", " between cells
            encoding="utf-8-sig",
            chunksize=settings.BATCH_CHUNK_ROWS,
        )
        for frame in frames:
            columns = {name: frame.iloc[:, i].tolist() for i, name in enumerate(header)}
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
