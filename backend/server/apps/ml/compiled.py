"""A compiled form of a tree ensemble (ONNX Runtime), verified before it serves.

A scikit-learn forest spends 10-20 ms on a one-row ``predict_proba``, nearly all of it
per-call overhead (input validation, a dispatch per tree); the same trees in ONNX Runtime
answer in about 0.05 ms. The joblib artifact stays the source of truth: the compiled form
is derived from it, cached next to it under a name bound to the artifact's sha256, and used
only after it reproduced scikit-learn on the bundle's verification sample (probabilities
within 1e-6, identical labels away from the threshold). Anything else — a converter
error, a disagreement, no sample — logs why and leaves the model on scikit-learn.

For large batches scikit-learn's vectorised trees can be the faster of the two, so each
call picks the faster path for its size, from timings taken when the model is compiled.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

TOLERANCE = 1e-6
THRESHOLD = 0.5

Converter = Callable[[Any, np.ndarray], bytes]


def skl2onnx_converter(estimator: Any, sample: np.ndarray) -> bytes:
    """scikit-learn -> ONNX bytes (probabilities as a plain tensor, no ZipMap)."""
    from skl2onnx import to_onnx

    onx = to_onnx(
        estimator,
        sample[:1].astype(np.float32),
        options={id(estimator): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return bytes(onx.SerializeToString())


@dataclass
class CompiledModel:
    session: Any
    input_name: str
    positive: int
    # Batches of up to this many rows go to ONNX Runtime; larger ones to scikit-learn.
    max_rows: int

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        probabilities = self.session.run(None, {self.input_name: matrix.astype(np.float32)})[1]
        return np.asarray(probabilities[:, self.positive], dtype=np.float64)


def cache_path(artifact: Path, sha256: str) -> Path:
    return artifact.with_name(f"{artifact.name}.{sha256[:16]}.onnx")


def compile_model(
    *,
    estimator: Any,
    reference: Callable[[np.ndarray], np.ndarray],
    positive: int,
    sample: np.ndarray | None,
    artifact: Path,
    sha256: str,
    converter: Converter = skl2onnx_converter,
) -> CompiledModel | None:
    """The verified compiled form of ``estimator``, or None (and a log line saying why)."""
    if sample is None or len(sample) == 0:
        logger.warning("%s: no verification sample in the bundle; serving with scikit-learn.", artifact.name)
        return None
    try:
        onnx_bytes = _load_or_convert(estimator, sample, artifact, sha256, converter)
        session = _session(onnx_bytes)
        compiled = CompiledModel(session, session.get_inputs()[0].name, positive, max_rows=0)
        problem = disagreement(reference(sample), compiled.predict_proba(sample))
    except Exception as exc:  # noqa: BLE001 - any converter or runtime failure means fallback
        logger.warning("%s: compiled form unavailable (%s: %s); serving with scikit-learn.",
                       artifact.name, type(exc).__name__, exc)
        return None
    if problem:
        logger.warning("%s: compiled form rejected (%s); serving with scikit-learn.", artifact.name, problem)
        cache_path(artifact, sha256).unlink(missing_ok=True)
        return None
    compiled.max_rows = _crossover(reference, compiled.predict_proba, sample)
    logger.info("%s: serving batches of up to %s rows with ONNX Runtime.", artifact.name, compiled.max_rows)
    return compiled


def disagreement(expected: np.ndarray, got: np.ndarray) -> str | None:
    """Why ``got`` may not stand in for ``expected``, or None when it may."""
    worst = float(np.max(np.abs(expected - got))) if len(expected) else 0.0
    if not worst <= TOLERANCE:  # also catches NaN
        return f"probabilities differ by up to {worst:.2e} (more than {TOLERANCE:g})"
    near_threshold = np.abs(expected - THRESHOLD) <= TOLERANCE
    flipped = ((expected > THRESHOLD) != (got > THRESHOLD)) & ~near_threshold
    if flipped.any():
        return f"{int(flipped.sum())} labels differ away from the threshold"
    return None


def _load_or_convert(
    estimator: Any, sample: np.ndarray, artifact: Path, sha256: str, converter: Converter
) -> bytes:
    cache = cache_path(artifact, sha256)
    try:
        return cache.read_bytes()
    except FileNotFoundError:
        pass
    started = time.perf_counter()
    onnx_bytes = converter(estimator, sample)
    try:  # another worker may be writing the same file: write aside, then rename
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_bytes(onnx_bytes)
        os.replace(tmp, cache)
        for stale in artifact.parent.glob(f"{artifact.name}.*.onnx"):
            if stale != cache:  # compiled from an earlier file of the same name
                stale.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("%s: cannot cache the compiled form (%s); compiling again next start.", artifact.name, exc)
    logger.info("%s: compiled to ONNX in %.1f s.", artifact.name, time.perf_counter() - started)
    return onnx_bytes


def _session(onnx_bytes: bytes) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One thread: a server has a worker per core already; threads would fight over them.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def _crossover(
    slow: Callable[[np.ndarray], np.ndarray], fast: Callable[[np.ndarray], np.ndarray], sample: np.ndarray
) -> int:
    """The batch size up to which ``fast`` (ONNX) beats ``slow`` (scikit-learn), from a
    straight line through timings at one row and at the whole sample."""
    big = len(sample)

    def timed(predict: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> float:
        predict(rows)  # warm up
        started = time.perf_counter()
        predict(rows)
        return time.perf_counter() - started

    one_slow, one_fast = timed(slow, sample[:1]), timed(fast, sample[:1])
    big_slow, big_fast = timed(slow, sample), timed(fast, sample)
    if big_fast <= big_slow or big <= 1:
        return 2**62  # ONNX wins at every size measured
    per_row_slow = (big_slow - one_slow) / (big - 1)
    per_row_fast = (big_fast - one_fast) / (big - 1)
    if per_row_fast <= per_row_slow:
        return 2**62
    return max(1, int((one_slow - one_fast) / (per_row_fast - per_row_slow)))
