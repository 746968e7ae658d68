"""One way from records to answers, for every route: read, score, write.

- A reader gives ``Batch``es: the JSON records of a request (``Batch.of_records``) or a CSV
  file's rows, a chunk at a time (``batch/reading.py``).
- ``score`` makes a ``Scored`` batch: each arm's rows checked against its signature and
  encoded (``encode``, Python work on the caller's thread), then predicted in one model
  call per arm (``predict``, which mostly releases the GIL).
- Writers take each scored batch, in order: ``LogWriter`` (the request log: a row, an id
  and a feedback token per record) and ``ScoredBatch`` (the answers, kept as arrays for
  the JSON or CSV answer, or a batch job's piece).

``run`` drives them. Predict is a batch of one, run inline; batch-predict and batch jobs
differ only in their reader and their writers. A file's chunks overlap three at a time:
the model scores chunk k+1 on a thread of its own while this thread hands chunk k to the
writers, and the log's writer thread writes chunk k-1 (``bulk.BackgroundWriter``).
scikit-learn's trees, ONNX Runtime and the database release the GIL, so on two cores their
work overlaps the Python work instead of adding to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import repeat
from types import TracebackType
from typing import Any, Protocol, Self

import numpy as np
from django.db import transaction

from apps.endpoints.experiments.evaluation import Running
from apps.endpoints.models import MLRequest
from apps.endpoints.monitoring import window
from apps.endpoints.serving import bulk, feedback
from apps.endpoints.serving.routing import Arms
from apps.ml import codecs, parallel
from apps.ml.answer import Answer, ModelOutput
from apps.ml.codecs import Frame
from apps.ml.runtime import Runtime, check_finite

# Which arm serves each of n rows, from each arm's share (``random_arms`` by default).
Split = Callable[[int, Sequence[float]], np.ndarray]

_NEEDS_JSON_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def random_arms(rows: int, shares: Sequence[float]) -> np.ndarray:
    """Each row to an arm at random, arm i with probability ``shares[i]``."""
    return np.random.default_rng().choice(len(shares), size=rows, p=shares)


# -- read --------------------------------------------------------------------------------


@dataclass
class Batch:
    """Records to score, as a reader gives them: JSON ``records``; JSON ``values``, a
    column per feature (the wire protocols' named tensors); or a file's text ``columns``
    (only those a model or the log reads) starting at ``first_line``."""

    size: int
    records: Sequence[Mapping[str, Any]] | None = None
    values: Mapping[str, Sequence[Any]] | None = None
    columns: Mapping[str, Sequence[str]] | None = None
    first_line: int | None = None  # of row 0 in its file (None: JSON records)
    truths: list[str | None] | None = None  # a label column's values, checked as feedback
    # Filled by ``encode``: which arm serves each row (None: arm 0 serves them all), and
    # per arm its rows and their encoded form, in parts (``parallel.split``).
    arms: np.ndarray | None = None
    work: list[tuple[np.ndarray, list[Any]]] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)  # per arm, its rows as checked

    @classmethod
    def of_records(cls, records: Sequence[Mapping[str, Any]]) -> Batch:
        return cls(size=len(records), records=records)

    @classmethod
    def of_values(cls, values: Mapping[str, Sequence[Any]], rows: int) -> Batch:
        return cls(size=rows, values=values)

    def as_records(self) -> Sequence[Mapping[str, Any]]:
        """Each row as a JSON record (a shadow's copy): as sent, or made from the columns."""
        if self.records is not None:
            return self.records
        if self.values is not None:
            names = list(self.values)
            return [
                dict(zip(names, row, strict=True))
                for row in zip(*self.values.values(), strict=True)
            ]
        assert self.columns is not None
        names = list(self.columns)
        return [
            dict(zip(names, row, strict=True)) for row in zip(*self.columns.values(), strict=True)
        ]

    def frame(self, runtime: Runtime, dropped: frozenset[str]) -> Frame:
        """All rows checked and converted for ``runtime`` (``codecs``), without the
        ``dropped`` features of a record (those only another arm of its test takes)."""
        signature = runtime.signature
        if self.columns is not None:
            # A feature the file has no column for is missing in every row (a batch file's
            # header was checked for every one; a request's CSV may leave optional ones out).
            blank = [""] * self.size
            cells = {name: self.columns.get(name, blank) for name in signature.names}
            return codecs.frame_from_text(cells, signature, first_line=self.first_line or 2)
        if self.values is not None:
            values = {k: v for k, v in self.values.items() if k not in dropped}
            return codecs.frame_from_columns(values, signature, rows=self.size)
        assert self.records is not None
        records = self.records
        if dropped:
            records = [
                {k: v for k, v in r.items() if k not in dropped} if isinstance(r, Mapping) else r
                for r in records
            ]
        return codecs.frame_from_records(records, signature)

    def inputs(self, features: Sequence[str]) -> list[str]:
        """Each record as the log keeps it, JSON text: a JSON record as sent; a file's row
        as its ``features`` cells as uploaded (less the spaces after commas, which the
        parser drops), from a template when no cell needs escaping (nearly always), at a
        third of the cost of ``json.dumps`` per row. Without ``features`` (``serve``'s log,
        which knows no file), every column of the batch."""
        if self.records is not None:
            return [json.dumps(record) for record in self.records]
        if self.values is not None:
            return [json.dumps(record) for record in self.as_records()]
        assert self.columns is not None
        features = list(features) or list(self.columns)
        columns = [self.columns[f] for f in features]
        if any(_NEEDS_JSON_ESCAPE.search("".join(column)) for column in columns):
            return [
                json.dumps(dict(zip(features, row, strict=True)))
                for row in zip(*columns, strict=True)
            ]
        names = [json.dumps(f).replace("%", "%%") for f in features]
        template = "{" + ",".join(f'{name}:"%s"' for name in names) + "}"
        return [template % row for row in zip(*columns, strict=True)]


# -- score -------------------------------------------------------------------------------


@dataclass
class Scored:
    """A batch with its answers: ``output`` in row order, ``arms`` the arm of each row."""

    batch: Batch
    output: ModelOutput
    arms: np.ndarray


def encode(batch: Batch, arms: Arms, runtimes: Sequence[Runtime], split: Split) -> None:
    """Split the rows between the arms and encode each arm's own. Every arm checks every
    row, so a bad cell is refused with its line whichever arm its row went to."""
    if len(runtimes) > 1:
        batch.arms = split(batch.size, arms.shares)
    for index, (algorithm, runtime) in enumerate(zip(arms.algorithms, runtimes, strict=True)):
        try:
            frame = batch.frame(runtime, _dropped(arms, algorithm.pk))
        except codecs.InvalidCells as exc:
            # Refused values are the loudest sign that the inputs changed: they count in
            # the version's drift window although nothing was predicted.
            window.refused(algorithm, exc.frame, exc.cells)
            raise
        if batch.arms is None:
            rows, mine = np.arange(batch.size), frame
        else:
            rows = np.flatnonzero(batch.arms == index)
            mine = frame.take(rows)
        batch.work.append((rows, parallel.split(runtime, mine) if rows.size else []))
        batch.frames.append(mine)


def predict(batch: Batch, runtimes: Sequence[Runtime]) -> ModelOutput:
    """The encoded batch's answers in row order, each arm predicting its rows in one call
    (or, for many rows, in parts at once: ``ml/parallel.py``)."""
    if batch.arms is None:
        [(_, encoded)] = batch.work
        return parallel.predict(runtimes[0], encoded)
    parts = [
        (rows, parallel.predict(runtime, encoded))
        for runtime, (rows, encoded) in zip(runtimes, batch.work, strict=True)
        if rows.size
    ]
    return _interleave(parts, batch.size)


def answered(batch: Batch, output: ModelOutput) -> Scored:
    """The batch with its answers, once they are numbers JSON can carry."""
    check_finite(output, first_line=batch.first_line)
    arms = batch.arms if batch.arms is not None else np.zeros(batch.size, np.int64)
    return Scored(batch, output, arms)


def monitor(scored: Scored, arms: Arms) -> None:
    """Each arm's scored records, inputs and outputs, into its version's drift window."""
    batch, output = scored.batch, scored.output
    for algorithm, frame, (rows, _) in zip(arms.algorithms, batch.frames, batch.work, strict=True):
        if rows.size:
            taken = None if batch.arms is None else rows
            window.record(algorithm, frame, _output_columns(output, taken))
    batch.frames = []  # no longer needed: a file's chunk is not held longer for it


def _output_columns(output: ModelOutput, rows: np.ndarray | None) -> dict[str, np.ndarray]:
    columns = {}
    if output.labels is not None:
        columns["label"] = output.labels if rows is None else output.labels[rows]
    if output.values is not None:
        columns["prediction"] = output.values if rows is None else output.values[rows]
    return columns


def _dropped(arms: Arms, algorithm_id: int) -> frozenset[str]:
    """The features only another arm of the test takes: a client, who cannot know its
    arm, sends what either takes, and each arm gets its own. A feature neither takes is
    still refused."""
    if arms.abtest is None:
        return frozenset()
    versions = arms.abtest.arms
    own = {f["name"] for v in versions if v.pk == algorithm_id for f in v.features}
    others = {f["name"] for v in versions if v.pk != algorithm_id for f in v.features}
    return frozenset(others - own)


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


# -- write -------------------------------------------------------------------------------


class Writer(Protocol):
    """Takes each scored batch in order, in a ``with`` block around the whole run: its
    exit finishes the work (waits for writes, joins answers), or undoes it on failure."""

    def write(self, scored: Scored) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class LogWriter:
    """Each record as an ``MLRequest``: the record, the whole answer, the version, the A/B
    test and the client; a label column's value as its feedback (``via`` upload).

    Three ways to write, chosen by the caller:

    - ``now``: in this thread (predict): one row is one ``INSERT ... RETURNING`` without a
      transaction; more rows, one transaction;
    - ``behind``: on a writer thread, in the caller's transaction (a file on PostgreSQL, a
      batch job's piece);
    - ``pieces``: on a writer thread, each chunk committed by itself (a file on SQLite,
      whose one write lock a whole file's transaction would hold); a failure deletes the
      chunks committed before it.
    """

    def __init__(
        self,
        arms: Arms,
        answer: Answer,
        *,
        user_id: int | None,
        client: str | None,
        features: Sequence[str] = (),
        mode: str = "now",
        labels_as_feedback: bool = True,
    ) -> None:
        self.arms, self.answer = arms, answer
        self.user_id, self.client = user_id, client
        # Whether a label column is the rows' feedback: only where its uploader may give
        # feedback (policy.feedback_refusal); it is scored either way (ScoredBatch).
        self.labels_as_feedback = labels_as_feedback
        self.features = features  # a file's columns the log keeps of each row
        self.mode = mode
        self._algorithm_ids = np.array([a.pk for a in arms.algorithms])
        self._abtest_id = arms.abtest.pk if arms.abtest is not None else None
        self._background: bulk.BackgroundWriter | None = None
        self._written: list[np.ndarray | Future[np.ndarray]] = []
        self.ids = np.empty(0, np.int64)  # every row's id, in order, once the block ends

    def __enter__(self) -> Self:
        if self.mode != "now":
            self._background = bulk.BackgroundWriter(pieces=self.mode == "pieces")
            self._background.__enter__()
        return self

    def write(self, scored: Scored) -> None:
        rows = self.rows(scored)
        if self._background is not None:
            self._written.append(self._background.submit(rows))
        elif len(rows) == 1:
            self._written.append(np.array([bulk.insert_request(rows[0])], np.int64))
        else:
            with transaction.atomic():
                self._written.append(bulk.insert_requests(rows))

    @property
    def last_ids(self) -> np.ndarray | Future[np.ndarray]:
        """The ids of the chunk written last: an array, or the future of one when a writer
        thread writes it."""
        return self._written[-1]

    def rows(self, scored: Scored) -> list[bulk.LogRow]:
        batch, output = scored.batch, scored.output
        truths = (batch.truths if self.labels_as_feedback else None) or [None] * batch.size
        fields = zip(
            batch.inputs(self.features),
            self.answer.texts(output),
            self.answer.responses(output),
            truths,
            self._algorithm_ids[scored.arms].tolist(),
            repeat(self._abtest_id),
            repeat(self.user_id),
            (None if truth is None else self.client for truth in truths),
            strict=False,  # the repeats are endless
        )
        # tuple.__new__ makes each LogRow from its fields in C: the named tuple's own
        # constructor is a Python function, about 0.4 us a row.
        return list(map(tuple.__new__, repeat(bulk.LogRow), fields))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._background is not None:
            try:
                self._background.__exit__(exc_type, exc, traceback)
            except BaseException:
                self._undo()
                raise
            if exc_type is not None:
                self._undo()
                return
        if exc_type is None and self._written:
            self.ids = np.concatenate(
                [w.result() if isinstance(w, Future) else w for w in self._written]
            )

    def _undo(self) -> None:
        """Delete the chunks a failed file committed (``pieces``), with their feedback's
        share of the tally, one chunk per transaction. Each chunk's ids are a range."""
        if self._background is None or self.mode != "pieces":
            return
        for ids in self._background.written:
            if ids.size:
                feedback.delete_requests(
                    MLRequest.objects.filter(pk__gte=int(ids[0]), pk__lte=int(ids[-1]))
                )


class ScoredBatch:
    """A whole batch's answers, kept as compact arrays in row order for the writers of
    answers (``batch/output.py``, ``serving/predict.py``), with the offline evaluation of
    a label column. ``log``: the writer that logged them, whose ids they answer (or the
    ``request_ids`` themselves, for answers made elsewhere)."""

    def __init__(
        self,
        arms: Arms,
        answer: Answer,
        *,
        log: LogWriter | None = None,
        request_ids: np.ndarray | None = None,
        header: Sequence[str] = (),
        ignored_columns: Sequence[str] = (),
        label_column: str | None = None,
        labels_note: str | None = None,
        json_rows: bool = False,
    ) -> None:
        self.arms, self.answer, self.log = arms, answer, log
        # ``json_rows``: rows answered as JSON are written as JSON text as the batches
        # come (a text per batch, the rows joined by commas), instead of kept as arrays to
        # be written once the last batch is in: the writing then overlaps the model's and
        # the log's work on the next batches (docs/speed.md). A logged batch's text needs
        # its ids and tokens, so it is written once the log's writer has written it: at a
        # later batch's turn, and the last ones by ``json_text``.
        if json_rows and request_ids is not None:
            raise ValueError("json_rows needs the log's writer, not ids made elsewhere")
        self.json_texts: list[str] | None = [] if json_rows else None
        self._unwritten: list[tuple[ModelOutput, np.ndarray | Future[np.ndarray]]] = []
        # Why a label column was scored but not recorded as feedback (None: it was, or
        # there is none).
        self.labels_note = labels_note
        self._request_ids = request_ids
        self.header = list(header)
        self.ignored_columns = list(ignored_columns)
        self.label_column = label_column
        self.evaluation = Running()
        self.output = ModelOutput()
        self.row_arms = np.empty(0, np.int64)  # the arm of each row
        self._outputs: list[ModelOutput] = []
        self._arms: list[np.ndarray] = []

    @property
    def logged(self) -> bool:
        return self.log is not None or self._request_ids is not None

    @property
    def request_ids(self) -> np.ndarray:
        """The rows' ids in the log, once the log's writer is done (its ``with`` block)."""
        if self._request_ids is not None:
            return self._request_ids
        return self.log.ids if self.log is not None else np.empty(0, np.int64)

    @property
    def count(self) -> int:
        return len(self.row_arms)

    def rows_per_arm(self) -> list[int]:
        counts: list[int] = np.bincount(self.row_arms, minlength=len(self.arms.algorithms)).tolist()
        return counts

    def __enter__(self) -> Self:
        return self

    def write(self, scored: Scored) -> None:
        if scored.batch.truths is not None:
            self.evaluation.add(self.answer.signature.task, scored.batch.truths, scored.output)
        if self.json_texts is None:
            self._outputs.append(scored.output)
        elif self.log is None:
            self.json_texts.append(",".join(self.answer.row_texts(scored.output, None, None)))
        else:  # the log's writer was handed this batch just before (``run``'s order)
            self._unwritten.append((scored.output, self.log.last_ids))
            self._write_json(done_only=True)
        self._arms.append(scored.arms)

    def json_text(self) -> list[str]:
        """Every batch's JSON text (``json_rows``), once the log's writer is done."""
        assert self.json_texts is not None, "json_rows was not asked for"
        self._write_json(done_only=False)
        return self.json_texts

    def _write_json(self, *, done_only: bool) -> None:
        """The JSON text of the logged batches whose ids are known, in order: those the
        log's writer has written (``done_only``), or all of them."""
        assert self.json_texts is not None
        while self._unwritten:
            output, ids = self._unwritten[0]
            if isinstance(ids, Future):
                if done_only and not ids.done():
                    return
                ids = ids.result()
            pks = ids.tolist()
            rows = self.answer.row_texts(output, pks, feedback.tokens_for(pks))
            self.json_texts.append(",".join(rows))
            self._unwritten.pop(0)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None and self._arms:
            if self._outputs:
                self.output = ModelOutput.join(self._outputs)
            self.row_arms = np.concatenate(self._arms)
        self._outputs, self._arms = [], []


# -- run ---------------------------------------------------------------------------------


def run(
    batches: Iterable[Batch],
    arms: Arms,
    runtimes: Sequence[Runtime],
    writers: Sequence[Writer],
    *,
    split: Split | None = None,
    overlap: bool = True,
) -> None:
    """Score every batch and hand it to every writer, in order (see the module doc).
    ``overlap``: the model scores the next batch on a thread of its own (files); without,
    everything runs in this thread (a request: a thread costs more than its model).
    ``split``: which arm serves each row (default ``random_arms``, looked up at the call)."""
    split = split or random_arms
    with ExitStack() as stack:
        for writer in writers:
            stack.enter_context(writer)
        if not overlap:
            for batch in batches:
                encode(batch, arms, runtimes, split)
                _hand_on(answered(batch, predict(batch, runtimes)), arms, writers)
            return
        model = stack.enter_context(
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-model")
        )
        pending: tuple[Batch, Future[ModelOutput]] | None = None
        for batch in batches:
            encode(batch, arms, runtimes, split)
            scoring = model.submit(predict, batch, runtimes)
            if pending is not None:
                _hand_on(answered(pending[0], pending[1].result()), arms, writers)
            pending = (batch, scoring)
        if pending is not None:
            _hand_on(answered(pending[0], pending[1].result()), arms, writers)


def _hand_on(done: Scored, arms: Arms, writers: Sequence[Writer]) -> None:
    monitor(done, arms)
    for writer in writers:
        writer.write(done)
