"""A large batch's model call over more than one core.

A model call holds one core: ONNX Runtime's sessions are made with one thread
(``compiled._session``: a server has a worker per core already), and scikit-learn's
estimators are made single-threaded (``runtime.single_threaded``). For one record that is
right. For a file it leaves the second core idle while the slowest stage runs: on the
Adult forest, 10,000 rows take 80 ms in one call and 40 ms as two halves on two threads
(ONNX Runtime and scikit-learn's trees release the GIL while they work).

So a batch of at least ``MODEL_PARALLEL_ROWS`` rows is cut into up to ``MODEL_THREADS``
parts of consecutive rows, each encoded by the caller as before (``split``), and the parts
are predicted at once (``predict``): the first on the calling thread, the others on a pool
of this process (``MODEL_THREADS - 1`` threads, made on first use in each process, since
threads do not survive a fork; a later change of the setting changes the parts, not the
pool, whose extra parts then wait their turn). The pool is shared by the process's request
threads: parts of two large batches at once queue for it, while each batch's first part
runs on its own thread.

Only runtimes that say their model may run on several threads at once are cut
(``Runtime.parallel_rows``: ONNX Runtime, XGBoost, scikit-learn's own estimators; not
LightGBM's Booster or a user's own class). Rows are predicted independently, so the
answers are the same as one call's, in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from itertools import pairwise
from typing import Any

from django.conf import settings

from apps.core.per_process import PerProcess
from apps.ml.answer import ModelOutput
from apps.ml.codecs import Frame
from apps.ml.runtime import Runtime


def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        max_workers=max(1, settings.MODEL_THREADS - 1), thread_name_prefix="model-part"
    )


_POOL: PerProcess[ThreadPoolExecutor] = PerProcess(_pool)


def parts(rows: int) -> list[slice]:
    """The consecutive row ranges a batch of ``rows`` rows is predicted in: one below
    ``MODEL_PARALLEL_ROWS`` (or with ``MODEL_THREADS`` 1), else up to ``MODEL_THREADS``
    of nearly equal size, none smaller than half the threshold."""
    threads, threshold = settings.MODEL_THREADS, settings.MODEL_PARALLEL_ROWS
    if threads <= 1 or rows < threshold:
        return [slice(0, rows)]
    count = max(1, min(threads, rows // max(1, threshold // 2)))
    bounds = [rows * i // count for i in range(count + 1)]
    return [slice(a, b) for a, b in pairwise(bounds)]


def split(runtime: Runtime, frame: Frame) -> list[Any]:
    """``frame`` encoded for ``runtime`` in the parts ``predict`` takes (on the caller's
    thread: encoding is Python work)."""
    cuts = parts(frame.rows)
    # The size first: every prediction passes here, and a runtime's answer may cost more
    # than a comparison (the Adult bundle's walks its estimator's parameters).
    if len(cuts) == 1 or not runtime.parallel_rows:
        return [runtime.encode(frame)]
    return [runtime.encode(frame.part(cut)) for cut in cuts]


def predict(runtime: Runtime, encoded: Sequence[Any]) -> ModelOutput:
    """The answers of every part of ``split``, in row order, the parts at once."""
    if len(encoded) == 1:
        return runtime.predict_encoded(encoded[0])
    pool = _POOL.get()
    others = [pool.submit(runtime.predict_encoded, part) for part in encoded[1:]]
    try:
        first = runtime.predict_encoded(encoded[0])
    finally:
        # Every part has finished before this returns or raises: a part still running
        # must not outlive the request that made it.
        wait(others)
    return ModelOutput.join([first, *(future.result() for future in others)])
