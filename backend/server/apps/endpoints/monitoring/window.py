"""The current window: each version's last ``DRIFT_WINDOW`` scored records, as codes of its
reference profile's bins, shared by every process and host through the database.

On the request path (``record``, ``refused``) a batch's values become codes
(``apps.ml.drift.encode``: an int16 per record and feature, vectorised) and are appended
to this process's buffer: no I/O. Every ``DRIFT_FLUSH_SECONDS`` a thread of the process
writes what its buffer holds as one ``DriftSegment`` per version, and deletes the segments
that fell out of the window. Reading a window (``codes``) first writes this process's
buffer, so a single process sees its own records at once; others' within a flush.

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
from collections.abc import Sequence

import numpy as np
from django.conf import settings
from django.db import connection, transaction

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


class _Buffer:
    """This process's records not yet written, per reference, and the thread that writes
    them: one per process (``PerProcess``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[int, list[np.ndarray]] = {}
        self.rows: dict[int, int] = {}
        self.thread: threading.Thread | None = None
        if settings.DRIFT_FLUSH_SECONDS > 0:
            self.thread = threading.Thread(target=self.run, name="drift-window", daemon=True)
            self.thread.start()

    def add(self, reference_id: int, codes: np.ndarray) -> None:
        limit = settings.DRIFT_WINDOW
        if len(codes) > limit:  # a large file: only its last rows can be in the window
            codes = codes[-limit:]
        with self.lock:
            blocks = self.pending.setdefault(reference_id, [])
            blocks.append(codes)
            self.rows[reference_id] = self.rows.get(reference_id, 0) + len(codes)
            # Bounded whatever the traffic: older blocks past a window's worth go.
            while self.rows[reference_id] - len(blocks[0]) >= limit:
                self.rows[reference_id] -= len(blocks.pop(0))

    def take(self, reference_id: int | None = None) -> dict[int, np.ndarray]:
        with self.lock:
            keys = list(self.pending) if reference_id is None else [reference_id]
            taken = {
                key: np.concatenate(self.pending.pop(key)) for key in keys if self.pending.get(key)
            }
            for key in taken:
                self.rows.pop(key, None)
        return taken

    def run(self) -> None:
        idle = 0.0
        while True:
            time.sleep(settings.DRIFT_FLUSH_SECONDS)
            taken = self.take()
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
    codes = drift.encode(current.profile, frame.columns, outputs, rows=frame.rows)
    _buffer.get().add(current.reference_id, codes)


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
    _buffer.get().add(current.reference_id, codes)


# -- the database -------------------------------------------------------------------------


def write(taken: dict[int, np.ndarray]) -> None:
    """One segment per reference, and the segments that fell out of its window deleted,
    in one transaction. A reference deleted meanwhile (its version was) is skipped."""
    limit = settings.DRIFT_WINDOW
    with transaction.atomic():
        existing = set(
            DriftReference.objects.filter(pk__in=list(taken)).values_list("pk", flat=True)
        )
        for reference_id, codes in taken.items():
            if reference_id not in existing:
                continue
            codes = codes[-limit:]
            DriftSegment.objects.create(
                reference_id=reference_id,
                rows=len(codes),
                codes=codes.astype(CODE_TYPE).tobytes(),
            )
            _prune(reference_id, limit)


def _prune(reference_id: int, limit: int) -> None:
    """Delete the segments older than the newest ones that hold ``limit`` records."""
    held = 0
    sizes = DriftSegment.objects.filter(reference_id=reference_id).values_list("pk", "rows")
    for pk, rows in sizes.order_by("-pk"):
        held += rows
        if held >= limit:
            DriftSegment.objects.filter(reference_id=reference_id, pk__lt=pk).delete()
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
