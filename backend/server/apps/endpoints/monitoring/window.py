"""The current window: each version's last ``DRIFT_WINDOW`` scored records, as codes of its
reference profile's bins, shared by every process and host through the database.

On the request path (``record``) a scored batch's checked columns and answers are
appended to this process's buffer: no I/O, no coding. Every ``DRIFT_FLUSH_SECONDS`` a
thread of the process turns what the buffer holds into codes (``apps.ml.drift.encode``:
an int16 per record and feature, one vectorised call for many requests), writes them as
one ``DriftSegment`` per version, and deletes the segments that fell out of the window.
Reading a window (``codes``) first writes this process's buffer, so a single process sees
its own records at once; others' within a flush.

- Single predictions, batch-predict rows and batch-job rows alike, logged or not: they all
  pass ``serving/pipeline.py``, which calls ``record`` for every scored batch.
- Refused records count: a batch whose values the signature refuses (an unknown category,
  a string in a number column, a missing required feature) enters the window with the
  refused cells coded as such (``refused``), and without outputs.
- Several hosts share one database, so they share one window per version: every host's
  ``/metrics`` and drift report show the same numbers (aggregate them with ``max``, not
  ``sum``).
- Records a process scored but had not written when it died are lost (at most a flush's
  worth): the window is a sample of the traffic, not its ledger.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection

from apps.core.per_process import PerProcess
from apps.endpoints.models import DriftReference, DriftSegment, MLAlgorithm
from apps.endpoints.monitoring import references
from apps.ml import codecs, drift
from apps.ml.codecs import Frame

logger = logging.getLogger(__name__)

CODE_TYPE = np.dtype("<i2")  # as stored: little-endian int16, whatever the host
# How long the flushing thread keeps its database connection with nothing to write.
IDLE_SECONDS = 5.0
_REFUSED_CODES = {
    codecs.MISSING: drift.MISSING,
    codecs.UNSEEN: drift.UNSEEN,
    codecs.TYPE: drift.INVALID,
}


@dataclass(frozen=True)
class _Part:
    """Scored records kept as they were checked, their codes made later, together."""

    columns: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    rows: int

    def last(self, rows: int) -> _Part:
        return _Part(
            {k: v[-rows:] for k, v in self.columns.items()},
            {k: v[-rows:] for k, v in self.outputs.items()},
            min(rows, self.rows),
        )


class _Buffer:
    """This process's records not yet written, per reference, and the thread that writes
    them: one per process (``PerProcess``). A scored batch is kept as its checked columns
    (``_Part``, an append on the request path); its codes are made when the buffer is
    taken, consecutive batches together: one vectorised ``drift.encode`` for a second's
    single predictions costs a few microseconds a record, where one call per request cost
    tens (bench/drift_bench.py). Refused records are coded at once (their refused cells
    marked), being rare."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[int, list[_Part | np.ndarray]] = {}
        self.profiles: dict[int, drift.Profile] = {}
        self.rows: dict[int, int] = {}
        self.thread: threading.Thread | None = None
        if settings.DRIFT_FLUSH_SECONDS > 0:
            self.thread = threading.Thread(target=self.run, name="drift-window", daemon=True)
            self.thread.start()

    def add(self, reference_id: int, profile: drift.Profile, item: _Part | np.ndarray) -> None:
        limit = settings.DRIFT_WINDOW
        if _rows(item) > limit:  # a large file: only its last rows can be in the window
            item = item.last(limit) if isinstance(item, _Part) else item[-limit:]
        with self.lock:
            self.profiles[reference_id] = profile
            items = self.pending.setdefault(reference_id, [])
            items.append(item)
            self.rows[reference_id] = self.rows.get(reference_id, 0) + _rows(item)
            # Bounded whatever the traffic: older records past a window's worth go.
            while self.rows[reference_id] - _rows(items[0]) >= limit:
                self.rows[reference_id] -= _rows(items.pop(0))

    def take(self, reference_id: int | None = None) -> dict[int, np.ndarray]:
        """The records held (for ``reference_id``, or all) as codes, oldest first."""
        with self.lock:
            keys = list(self.pending) if reference_id is None else [reference_id]
            taken = {key: self.pending.pop(key) for key in keys if self.pending.get(key)}
            profiles = {key: self.profiles[key] for key in taken}
            for key in taken:
                self.rows.pop(key, None)
        return {key: _codes(profiles[key], items) for key, items in taken.items()}

    def run(self) -> None:
        idle = 0.0
        while True:
            time.sleep(settings.DRIFT_FLUSH_SECONDS)
            try:
                taken = self.take()
            except Exception:  # a batch that cannot be coded is lost, not the thread
                logger.exception("Drift records could not be coded.")
                continue
            if not taken:
                idle += settings.DRIFT_FLUSH_SECONDS
                if idle >= IDLE_SECONDS:
                    connection.close()  # give the connection back while nothing comes
                    idle = 0.0
                continue
            idle = 0.0
            try:
                write(taken)
            except Exception:  # whatever happens, the thread goes on
                logger.exception("Drift records could not be written (%s).", len(taken))
                connection.close()


def _rows(item: _Part | np.ndarray) -> int:
    return item.rows if isinstance(item, _Part) else len(item)


def _codes(profile: drift.Profile, items: Sequence[_Part | np.ndarray]) -> np.ndarray:
    """The codes of ``items`` in order: each run of parts with the same columns coded in
    one call."""
    blocks: list[np.ndarray] = []
    run: list[_Part] = []

    def code_run() -> None:
        if not run:
            return
        first = run[0]
        columns = {k: np.concatenate([p.columns[k] for p in run]) for k in first.columns}
        outputs = {k: np.concatenate([p.outputs[k] for p in run]) for k in first.outputs}
        blocks.append(drift.encode(profile, columns, outputs, rows=sum(p.rows for p in run)))
        run.clear()

    for item in items:
        if isinstance(item, _Part) and (
            not run
            or (
                item.columns.keys() == run[0].columns.keys()
                and item.outputs.keys() == run[0].outputs.keys()
            )
        ):
            run.append(item)
            continue
        code_run()
        if isinstance(item, _Part):
            run.append(item)
        else:
            blocks.append(item)
    code_run()
    return np.concatenate(blocks)


_buffer = PerProcess(_Buffer)


# -- the request path ---------------------------------------------------------------------


def record(algorithm: MLAlgorithm, frame: Frame, outputs: dict[str, np.ndarray]) -> None:
    """Scored records of a version: its checked ``frame`` and its ``outputs`` (a label or
    prediction column, ``references.output_columns``)."""
    if not settings.DRIFT_MONITORING or frame.rows == 0:
        return
    current = references.current(algorithm)
    if current is None:
        return
    part = _Part(frame.columns, outputs, frame.rows)
    _buffer.get().add(current.reference_id, current.profile, part)


def refused(algorithm: MLAlgorithm, frame: Frame, cells: Sequence[tuple[int, str, str]]) -> None:
    """Records the signature refused: their values as read, each refused cell as a
    missing value, an unseen category or a type error, and no outputs."""
    if not settings.DRIFT_MONITORING or frame.rows == 0:
        return
    current = references.current(algorithm)
    if current is None:
        return
    profile = current.profile
    codes = drift.encode(profile, frame.columns, None, rows=frame.rows)
    for row, feature, kind in cells:
        try:
            column = profile.index(feature)
        except KeyError:  # a feature the reference does not describe
            continue
        codes[row, column] = _REFUSED_CODES.get(kind, drift.INVALID)
    _buffer.get().add(current.reference_id, profile, codes)


# -- the database -------------------------------------------------------------------------


def write(taken: dict[int, np.ndarray]) -> None:
    """One segment per reference, then the segments that fell out of its window deleted:
    each a single statement in autocommit, with no transaction around them.

    On SQLite a transaction holds the database's one write lock from BEGIN to COMMIT, and a
    thread that gives up the GIL between its statements waits for it (up to the switch
    interval, 5 ms) while request threads run: every worker's predictions, whose log
    INSERTs need that lock, slept in SQLite's busy handler meanwhile (req/s -19 % at 8
    connections, bench/drift_bench.py). A segment whose prune did not happen is harmless:
    a window is read newest first and stops at ``DRIFT_WINDOW`` records. A reference
    deleted meanwhile (its version was) is skipped."""
    limit = settings.DRIFT_WINDOW
    existing = set(DriftReference.objects.filter(pk__in=list(taken)).values_list("pk", flat=True))
    for reference_id, codes in taken.items():
        if reference_id not in existing:
            continue
        codes = codes[-limit:]
        try:
            DriftSegment.objects.create(
                reference_id=reference_id,
                rows=len(codes),
                codes=codes.astype(CODE_TYPE).tobytes(),
            )
        except IntegrityError:  # its reference was deleted since the read above
            continue
        _prune(reference_id, limit)


def _prune(reference_id: int, limit: int) -> None:
    """Delete the segments older than the newest ones that hold ``limit`` records: a read,
    then one DELETE (``QuerySet.delete`` would wrap it in a transaction, see ``write``)."""
    held = 0
    sizes = DriftSegment.objects.filter(reference_id=reference_id).values_list("pk", "rows")
    for pk, rows in sizes.order_by("-pk"):
        held += rows
        if held >= limit:
            table = connection.ops.quote_name(DriftSegment._meta.db_table)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"DELETE FROM {table} WHERE reference_id = %s AND id < %s",
                    [reference_id, pk],
                )
            return


def flush(reference_id: int | None = None) -> None:
    """Write what this process holds (for ``reference_id``, or all), now."""
    buffer = _buffer.existing()
    if buffer is None:
        return
    taken = buffer.take(reference_id)
    if taken:
        write(taken)


def codes(reference_id: int, width: int, columns: int) -> np.ndarray:
    """The window: the last ``width`` records of the reference, oldest first, as a
    (records, ``columns``) matrix of codes. This process's buffer is written first."""
    flush(reference_id)
    blocks: list[np.ndarray] = []
    held = 0
    segments = DriftSegment.objects.filter(reference_id=reference_id).order_by("-pk")
    for rows, data in segments.values_list("rows", "codes").iterator(chunk_size=64):
        block = np.frombuffer(bytes(data), dtype=CODE_TYPE).reshape(rows, columns)
        blocks.append(block)
        held += rows
        if held >= width:
            break
    if not blocks:
        return np.empty((0, columns), dtype=np.int16)
    window = np.concatenate(blocks[::-1])
    return window[-width:].astype(np.int16)


def reset() -> None:
    """Forget what this process holds (tests)."""
    buffer = _buffer.existing()
    if buffer is not None:
        buffer.take()
