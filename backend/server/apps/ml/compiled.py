"""A compiled form of a tree ensemble (ONNX Runtime), verified before it serves.

A scikit-learn forest spends 10-20 ms on a one-row ``predict_proba``, nearly all of it
per-call overhead (input validation, a dispatch per tree); the same trees in ONNX Runtime
answer in about 0.05 ms. The joblib artifact stays the source of truth: the compiled form
is derived from it, cached next to it under a name bound to the artifact's sha256, sealed
with a MAC keyed by ``SECRET_KEY`` (a file swapped beside an untouched artifact is not
used: it is rebuilt from the verified artifact), and used only after it reproduced
scikit-learn on the bundle's verification sample (probabilities
within 1e-6, identical labels away from the threshold). Anything else — a converter
error, a disagreement, no sample — logs why and leaves the model on scikit-learn.

For large batches scikit-learn's vectorised trees can be the faster of the two, so each
call picks the faster path for its size, from timings taken when the model is compiled.

Two users of this module: the Adult demo bundles (``compile_model``: a card of
preprocessing and probabilities beside the artifact, so a worker serves without
unpickling), and every other model (``compile_generic``, at registration: converted with
float32 inputs, else float64, verified on the input example and generated rows within
``GENERIC_TOLERANCE``; the outcome is recorded in the algorithm's ``serving`` card).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

from apps.ml.answer import ModelOutput
from apps.ml.codecs import Frame
from apps.ml.runtime import Runtime
from apps.ml.signature import CLASSIFICATION, Feature, Signature

logger = logging.getLogger(__name__)

TOLERANCE = 1e-6
ALWAYS = 2**62  # max_rows when ONNX Runtime was the faster path at every size measured
THRESHOLD = 0.5

Converter = Callable[[Any, np.ndarray], bytes]
# The ONNX opsets every form is converted to, the Adult bundles' and any other model's.
OPSET = {"": 17, "ai.onnx.ml": 3}


def skl2onnx_converter(estimator: Any, sample: np.ndarray) -> bytes:
    """scikit-learn -> ONNX bytes (probabilities as a plain tensor, no ZipMap)."""
    from skl2onnx import to_onnx

    onx = to_onnx(
        estimator,
        sample[:1].astype(np.float32),
        options={id(estimator): {"zipmap": False}},
        target_opset=OPSET,
    )
    return bytes(onx.SerializeToString())


@dataclass
class CompiledModel:
    session: Any
    input_name: str
    positive: int
    # Batches of up to this many rows go to ONNX Runtime; larger ones to scikit-learn.
    max_rows: int
    # "rebuilt from the artifact: <why the cache was not used>", else empty (for /readyz).
    origin: str = ""

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        probabilities = self.session.run(None, {self.input_name: matrix.astype(np.float32)})[1]
        return _probabilities(probabilities[:, self.positive])


def _probabilities(output: Any) -> np.ndarray:
    """float64 probabilities within [0, 1]: ONNX Runtime sums a forest's votes in float32,
    and a sure class comes out as 1.0000001192092896."""
    return np.clip(np.asarray(output, dtype=np.float64), 0.0, 1.0)


def cache_path(artifact: Path, sha256: str) -> Path:
    return artifact.with_name(f"{artifact.name}.{sha256[:16]}.onnx")


def card_path(artifact: Path, sha256: str) -> Path:
    """Beside the ONNX cache: what serving needs without unpickling the artifact (the
    preprocessing, metrics, the verification sample and scikit-learn's probabilities on
    it). A plain .npz read with allow_pickle=False: loading it runs no code."""
    return artifact.with_name(f"{artifact.name}.{sha256[:16]}.serving.npz")


def seal_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.mac")


class Unsealed(ValueError):
    """A cached file without a valid seal: written by someone without the service's key."""


def _mac(path: Path, data: bytes, key: str | bytes) -> str:
    # The file's name (which carries the artifact's sha256) is in the salt: a sealed form
    # of one artifact does not pass for another's.
    return salted_hmac(
        f"apps.ml.compiled:{path.name}", data, secret=key, algorithm="sha256"
    ).hexdigest()


def _write_sealed(path: Path, data: bytes) -> None:
    """``data`` at ``path``, and its MAC beside it. The cache folder is the artifacts'
    folder; whoever can write there but does not hold SECRET_KEY cannot make a compiled
    form the service will serve."""
    _write_atomically(path, data)
    _write_atomically(seal_path(path), _mac(path, data, settings.SECRET_KEY).encode())


def _read_sealed(path: Path) -> bytes:
    """The bytes at ``path`` if their seal was made with SECRET_KEY or one of its
    fallbacks (a rotated key only means rebuilding); ``Unsealed`` otherwise.
    FileNotFoundError when there is no such file."""
    data = path.read_bytes()
    try:
        seal = seal_path(path).read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        raise Unsealed(f"{path.name} has no seal") from None
    for key in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS):
        if constant_time_compare(seal, _mac(path, data, key)):
            return data
    raise Unsealed(f"{path.name} is not sealed with this service's key")


def remove_cached(artifact: Path, sha256: str) -> None:
    """Every compiled file made from the artifact with this sha256, seals included."""
    for path in (cache_path(artifact, sha256), card_path(artifact, sha256)):
        path.unlink(missing_ok=True)
        seal_path(path).unlink(missing_ok=True)


@dataclass
class CachedForm:
    model: CompiledModel
    card: dict[str, Any]  # preprocessing, metrics, sklearn_version, positive
    sample: np.ndarray


# Why a cached form of an artifact was not used, until the form built instead says so in
# its origin (``engine_note``, shown by /readyz). Keyed by the artifact's path and sha256.
_rejected: dict[tuple[Path, str], str] = {}


def _reject(artifact: Path, sha256: str, why: str) -> None:
    _rejected[(artifact, sha256)] = why


def _rebuilt(artifact: Path, sha256: str) -> str:
    """Why the form just built replaced a cached one; empty when nothing was rejected."""
    why = _rejected.pop((artifact, sha256), None)
    return f"rebuilt from the artifact: {why}" if why else ""


def load_cached(artifact: Path, sha256: str) -> CachedForm | None:
    """The compiled form and card cached for the artifact with this sha256, verified
    again against the scikit-learn probabilities recorded when it was first verified; None
    when there is none (or it fails), so the caller loads the artifact instead."""
    try:
        stored = _read_card(artifact, sha256)
        if stored is None:
            return None
        card, sample, expected = stored
        session = _session(_read_sealed(cache_path(artifact, sha256)))
        model = CompiledModel(
            session, session.get_inputs()[0].name, card["positive"], card["max_rows"]
        )
        problem = disagreement(expected, model.predict_proba(sample))
    except FileNotFoundError:
        return None
    except Unsealed as exc:
        logger.warning(
            "%s: cached compiled form not sealed (%s); rebuilding it from the artifact.",
            artifact.name,
            exc,
        )
        _reject(artifact, sha256, str(exc))
        return None
    except Exception as exc:
        logger.warning(
            "%s: cached compiled form unusable (%s: %s).", artifact.name, type(exc).__name__, exc
        )
        _reject(artifact, sha256, f"the cached form was unusable ({type(exc).__name__})")
        return None
    if problem:
        logger.warning("%s: cached compiled form rejected (%s).", artifact.name, problem)
        _reject(artifact, sha256, f"the cached form was rejected ({problem})")
        return None
    return CachedForm(model, card, sample)


def compile_model(
    *,
    estimator: Any,
    reference: Callable[[np.ndarray], np.ndarray],
    positive: int,
    sample: np.ndarray | None,
    artifact: Path,
    sha256: str,
    card: dict[str, Any] | None = None,
    converter: Converter = skl2onnx_converter,
) -> CompiledModel | None:
    """The verified compiled form of ``estimator``, or None (and a log line saying why).
    With ``card``, also writes what ``load_cached`` needs to serve without the artifact."""
    if sample is None or len(sample) == 0:
        logger.warning(
            "%s: no verification sample in the bundle; serving with scikit-learn.", artifact.name
        )
        return None
    try:
        onnx_bytes, origin = _load_or_convert(estimator, sample, artifact, sha256, converter)
        session = _session(onnx_bytes)
        compiled = CompiledModel(
            session, session.get_inputs()[0].name, positive, max_rows=0, origin=origin
        )
        problem = disagreement(reference(sample), compiled.predict_proba(sample))
    except Exception as exc:
        logger.warning(
            "%s: compiled form unavailable (%s: %s); serving with scikit-learn.",
            artifact.name,
            type(exc).__name__,
            exc,
        )
        return None
    if problem:
        logger.warning(
            "%s: compiled form rejected (%s); serving with scikit-learn.", artifact.name, problem
        )
        remove_cached(artifact, sha256)
        return None
    # Timed once per artifact: timings taken again at every load differ with the load on
    # the machine, and the card would send batches to one engine or the other by chance.
    recorded = _recorded_max_rows(artifact, sha256)
    compiled.max_rows = (
        recorded if recorded is not None else _crossover(reference, compiled.predict_proba, sample)
    )
    sizes = "of any size" if compiled.max_rows >= ALWAYS else f"of up to {compiled.max_rows} rows"
    logger.info("%s: serving batches %s with ONNX Runtime.", artifact.name, sizes)
    if card is not None:
        _save_card(artifact, sha256, card, compiled, sample, reference(sample))
    return compiled


def _read_card(artifact: Path, sha256: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray] | None:
    """The card cached for the artifact with this sha256, with its verification sample and
    scikit-learn's probabilities on it; None when there is none for this sha256. A damaged
    or unsealed file raises."""
    try:
        data = _read_sealed(card_path(artifact, sha256))
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            card = json.loads(str(stored["card"]))
            sample, expected = stored["sample"], stored["expected"]
    except FileNotFoundError:
        return None
    return (card, sample, expected) if card.get("sha256") == sha256 else None


def _recorded_max_rows(artifact: Path, sha256: str) -> int | None:
    """The crossover recorded in the artifact's card, if it has one for this sha256."""
    try:
        stored = _read_card(artifact, sha256)
    except Exception:
        return None
    max_rows = stored[0].get("max_rows") if stored else None
    return max_rows if isinstance(max_rows, int) else None


def _save_card(
    artifact: Path,
    sha256: str,
    card: dict[str, Any],
    model: CompiledModel,
    sample: np.ndarray,
    expected: np.ndarray,
) -> None:
    full = {**card, "sha256": sha256, "positive": model.positive, "max_rows": model.max_rows}
    buffer = io.BytesIO()
    np.savez(buffer, card=np.array(json.dumps(full)), sample=sample, expected=expected)
    try:
        _write_sealed(card_path(artifact, sha256), buffer.getvalue())
    except OSError as exc:
        logger.warning("%s: cannot cache the serving card (%s).", artifact.name, exc)


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
) -> tuple[bytes, str]:
    """The ONNX form (from the sealed cache, else converted), and why a cache present
    was not used (empty if none was rejected)."""
    cache = cache_path(artifact, sha256)
    try:
        return _read_sealed(cache), _rebuilt(artifact, sha256)
    except FileNotFoundError:
        pass
    except Unsealed as exc:  # converted again below, and sealed
        _reject(artifact, sha256, str(exc))
        logger.warning(
            "%s: cached compiled form not sealed (%s); compiling again.", artifact.name, exc
        )
    started = time.perf_counter()
    onnx_bytes = converter(estimator, sample)
    try:
        _write_sealed(cache, onnx_bytes)
        for stale in artifact.parent.glob(f"{artifact.name}.*.onnx"):
            if stale != cache:  # compiled from an earlier file of the same name
                for path in (stale, stale.with_suffix(".serving.npz")):
                    path.unlink(missing_ok=True)
                    seal_path(path).unlink(missing_ok=True)
    except OSError as exc:
        logger.warning(
            "%s: cannot cache the compiled form (%s); compiling again next start.",
            artifact.name,
            exc,
        )
    logger.info("%s: compiled to ONNX in %.1f s.", artifact.name, time.perf_counter() - started)
    return onnx_bytes, _rebuilt(artifact, sha256)


def _write_atomically(path: Path, data: bytes) -> None:
    """Another worker may be writing the same file: write aside, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _session(onnx_bytes: bytes) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One thread: a server has a worker per core already; threads would fight over them.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    # Errors only: onnxmltools' boosters declare a label output of one row, and ONNX
    # Runtime would warn of every larger batch on stderr.
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def _crossover(
    slow: Callable[[np.ndarray], np.ndarray],
    fast: Callable[[np.ndarray], np.ndarray],
    sample: np.ndarray,
) -> int:
    """The batch size up to which ``fast`` (ONNX) beats ``slow`` (scikit-learn), from a
    straight line through timings at one row and at the whole sample.

    Timed alone, a forest's scikit-learn call can be a little cheaper per row at 10,000
    rows (7.8 against 8.2 us here). It is not the faster path in a server: it takes the
    GIL back for every tree, so beside other threads it waits, where ONNX Runtime makes
    one call without the GIL. Sending 10k-row batch chunks to scikit-learn made the
    batch upload slower (bench/batch_bench.py: b/a 0.52 -> 0.42 on SQLite)."""
    big = len(sample)

    def timed(predict: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> float:
        predict(rows)  # warm up
        best = float("inf")
        for _ in range(3):  # best of three: one timing on a busy machine decides by chance
            started = time.perf_counter()
            predict(rows)
            best = min(best, time.perf_counter() - started)
        return best

    one_slow, one_fast = timed(slow, sample[:1]), timed(fast, sample[:1])
    big_slow, big_fast = timed(slow, sample), timed(fast, sample)
    if big_fast <= big_slow or big <= 1:
        return ALWAYS
    per_row_slow = (big_slow - one_slow) / (big - 1)
    per_row_fast = (big_fast - one_fast) / (big - 1)
    if per_row_fast <= per_row_slow:
        return ALWAYS
    return max(1, int((one_slow - one_fast) / (per_row_fast - per_row_slow)))


# -- any scikit-learn model --------------------------------------------------------------
#
# The same idea for a model registered from a file: skl2onnx converts it, ONNX Runtime
# serves it, but only after the ONNX form reproduced scikit-learn on the model's input
# example and generated rows (probabilities within 1e-5, the same labels away from ties,
# regression values within 1e-5 relative). The ONNX file's sha256 is recorded in the
# catalogue when the model is registered, and a cached form with another hash is never used.

GENERIC_TOLERANCE = 1e-5
_DTYPES = {"float32": np.float32, "float64": np.float64}


class OnnxRuntime(Runtime):
    engine = "onnx"
    parallel_rows = True  # ONNX Runtime's sessions may run on several threads at once

    def __init__(
        self, session: Any, signature: Signature, *, layout: str, dtype: str, labels: str = "names"
    ) -> None:
        self.session = session
        self.signature = signature
        self.layout = layout  # "matrix": one input of every feature; "columns": one each
        self.dtype = _DTYPES[dtype]
        # "names": the form answers the classes themselves (skl2onnx keeps classes_);
        # "index": their positions (a booster converted by onnxmltools knows no names).
        self.labels_by_index = labels == "index"
        self._inputs = [i.name for i in session.get_inputs()]

    def encode(self, frame: Frame) -> dict[str, np.ndarray]:
        return self._feed(frame)

    def predict_encoded(self, encoded: dict[str, np.ndarray]) -> ModelOutput:
        outputs = self.session.run(None, encoded)
        if self.signature.task == CLASSIFICATION:
            raw = np.ravel(outputs[0]).tolist()
            if self.labels_by_index:
                classes = self.signature.classes
                labels = np.array([classes[int(v)] for v in raw], dtype=object)
            else:
                labels = np.array([str(v) for v in raw], dtype=object)
            probabilities = _probabilities(outputs[1]) if len(outputs) > 1 else None
            return ModelOutput(labels=labels, probabilities=probabilities, engine=self.engine)
        return ModelOutput(
            values=np.asarray(outputs[0], dtype=np.float64).ravel(), engine=self.engine
        )

    def _feed(self, frame: Frame) -> dict[str, np.ndarray]:
        if self.layout == "matrix":
            if frame.matrix is not None:
                matrix = frame.matrix.astype(self.dtype, copy=False)
            elif frame.columns:
                matrix = np.column_stack([_numbers(c, self.dtype) for c in frame.columns.values()])
            else:
                matrix = np.empty((frame.rows, 0), self.dtype)
            return {self._inputs[0]: matrix}
        feed = {}
        for name, feature in zip(self._inputs, self.signature.features, strict=True):
            column = frame.columns[feature.name]
            if _is_text(feature):
                values = np.array(["" if v is None else str(v) for v in column], dtype=object)
            else:
                values = _numbers(column, self.dtype)
            feed[name] = values.reshape(-1, 1)
        return feed


def _is_text(feature: Feature) -> bool:
    if feature.type == "category" and feature.categories:
        return not feature.numeric_categories
    return feature.type in ("category", "string")


def _numbers(column: np.ndarray, dtype: Any) -> np.ndarray:
    if column.dtype == object:  # booleans (or numeric categories) with gaps
        column = np.array([np.nan if v is None else float(v) for v in column.tolist()])
    return np.asarray(column, dtype=dtype)


def _layout(model: Any, signature: Signature) -> str | None:
    """How the ONNX form takes its input, or None when skl2onnx cannot be given one."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    first = model.steps[0][1] if isinstance(model, Pipeline) else model
    if isinstance(first, ColumnTransformer):
        return "columns"
    if any(_is_text(f) for f in signature.features):
        return None
    return "matrix"


def _convert(model: Any, signature: Signature, layout: str, dtype: str) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import (
        DoubleTensorType,
        FloatTensorType,
        StringTensorType,
    )

    number = FloatTensorType if dtype == "float32" else DoubleTensorType
    if layout == "matrix":
        types = [("X", number([None, len(signature.features)]))]
    else:
        types = [
            (f.name, StringTensorType([None, 1]) if _is_text(f) else number([None, 1]))
            for f in signature.features
        ]
    options = {id(model): {"zipmap": False}} if signature.task == CLASSIFICATION else {}
    onx = to_onnx(
        model,
        initial_types=types,
        options=options,
        target_opset=OPSET,
    )
    return bytes(onx.SerializeToString())


# A model's own converter (a kind's, for a file in its library's format): (layout, dtype)
# -> the ONNX form's bytes. The default is skl2onnx's, for anything with scikit-learn's API.
Convert = Callable[[str, str], bytes]


def compile_generic(
    model: Any,
    signature: Signature,
    frame: Frame,
    expected: ModelOutput,
    *,
    convert: Convert | None = None,
    engine: str = "sklearn",
    library: str = "scikit-learn",
) -> tuple[OnnxRuntime | None, dict[str, Any]]:
    """The verified ONNX form of ``model`` and the serving card that says so, or None and a
    card that says why ``engine`` (the model's own library) serves. ``expected``: its
    answers on ``frame`` (the input example and generated rows). ``convert``: the model's
    own converter, which takes one matrix of numbers and answers labels by index.
    ``library``: what the card says the form reproduced. Never raises: a model that does
    not convert is served as it is."""
    labels = "index" if convert is not None else "names"
    layout = "matrix" if convert is not None else _layout(model, signature)
    if layout is None:
        return None, _library_card(
            engine, "skl2onnx needs numbers, or a ColumnTransformer for text features"
        )

    def skl2onnx(layout: str, dtype: str) -> bytes:
        return _convert(model, signature, layout, dtype)

    reasons = []
    for dtype in _DTYPES:  # float32 first: what tree ensembles compare in
        started = time.perf_counter()
        try:
            onnx_bytes = (convert or skl2onnx)(layout, dtype)
            runtime = OnnxRuntime(
                _session(onnx_bytes), signature, layout=layout, dtype=dtype, labels=labels
            )
            problem = generic_disagreement(signature, expected, runtime.predict(frame))
        except Exception as exc:  # any converter or runtime failure: scikit-learn
            reasons.append(f"{dtype}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        if problem:
            reasons.append(f"{dtype}: {problem}")
            continue
        card = {
            "engine": "onnx",
            "reason": f"reproduced {library} on {frame.rows} rows "
            f"(within {GENERIC_TOLERANCE:g}), {dtype} inputs",
            "layout": layout,
            "dtype": dtype,
            "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "compile_seconds": round(time.perf_counter() - started, 3),
            "onnx_bytes": onnx_bytes,  # written beside the artifact, then dropped from the card
        }
        if labels != "names":
            card["labels"] = labels
        return runtime, card
    return None, _library_card(engine, "; ".join(reasons))


def _library_card(engine: str, reason: str) -> dict[str, Any]:
    """The card of a model its own library serves, and why it is not compiled."""
    return {"engine": engine, "reason": f"not compiled: {reason}"[:1000]}


def generic_disagreement(
    signature: Signature, expected: ModelOutput, got: ModelOutput
) -> str | None:
    """Why ``got`` may not stand in for ``expected``, or None when it may."""
    if signature.task != CLASSIFICATION:
        assert expected.values is not None and got.values is not None
        close = np.isclose(got.values, expected.values, rtol=GENERIC_TOLERANCE, atol=1e-9)
        if not close.all():
            worst = float(np.max(np.abs(got.values - expected.values)))
            return f"{int((~close).sum())} values differ (by up to {worst:.2e})"
        return None
    assert expected.labels is not None and got.labels is not None
    ties = np.zeros(len(expected.labels), dtype=bool)
    if expected.probabilities is not None:
        if got.probabilities is None or got.probabilities.shape != expected.probabilities.shape:
            return "no probabilities of the same shape"
        worst = float(np.max(np.abs(got.probabilities - expected.probabilities), initial=0))
        if not worst <= GENERIC_TOLERANCE:  # also catches NaN
            return f"probabilities differ by up to {worst:.2e}"
        top = np.sort(expected.probabilities, axis=1)
        ties = top.shape[1] > 1 and (top[:, -1] - top[:, -2]) <= GENERIC_TOLERANCE
    flipped = (got.labels != expected.labels) & ~ties
    if flipped.any():
        return f"{int(flipped.sum())} labels differ"
    return None


def write_generic(artifact: Path, sha256: str, onnx_bytes: bytes) -> None:
    """Cache the ONNX form beside its artifact (a worker that loads it later skips the
    conversion). Best effort: without the file, workers convert again."""
    try:
        _write_atomically(cache_path(artifact, sha256), onnx_bytes)
    except OSError as exc:
        logger.warning("%s: cannot cache the compiled form (%s).", artifact.name, exc)


def load_generic(
    artifact: Path, sha256: str, signature: Signature, serving: dict[str, Any]
) -> OnnxRuntime | None:
    """The cached ONNX form recorded in ``serving``, if its bytes still have the recorded
    sha256; None otherwise (the caller loads the artifact and converts again)."""
    try:
        onnx_bytes = cache_path(artifact, sha256).read_bytes()
    except OSError:
        return None
    if hashlib.sha256(onnx_bytes).hexdigest() != serving.get("onnx_sha256"):
        logger.warning(
            "%s: cached ONNX form does not match its recorded sha256; not used.", artifact.name
        )
        _reject(artifact, sha256, "the cached ONNX form did not match its recorded sha256")
        return None
    try:
        return OnnxRuntime(
            _session(onnx_bytes),
            signature,
            layout=serving["layout"],
            dtype=serving["dtype"],
            labels=serving.get("labels", "names"),
        )
    except Exception as exc:  # a damaged cache only means converting again
        logger.warning("%s: cached ONNX form unusable (%s).", artifact.name, exc)
        return None


def rebuild_generic(
    model: Any,
    signature: Signature,
    serving: dict[str, Any],
    frame: Frame,
    reference: Runtime,
    *,
    artifact: Path,
    sha256: str,
    convert: Convert | None = None,
) -> OnnxRuntime | None:
    """Convert ``model`` again as recorded in ``serving`` (a host without the cached form),
    and serve it if it reproduces ``reference`` on ``frame``; cache it for the next worker.
    ``convert``: the model's own converter, as ``compile_generic`` took it."""
    layout, dtype = serving["layout"], serving["dtype"]
    try:
        if convert is not None:
            onnx_bytes = convert(layout, dtype)
        else:
            onnx_bytes = _convert(model, signature, layout, dtype)
        runtime = OnnxRuntime(
            _session(onnx_bytes),
            signature,
            layout=layout,
            dtype=dtype,
            labels=serving.get("labels", "names"),
        )
        problem = generic_disagreement(signature, reference.predict(frame), runtime.predict(frame))
    except Exception as exc:  # its own library serves instead
        logger.warning("%s: ONNX form not rebuilt (%s); serving without it.", artifact.name, exc)
        return None
    if problem:
        logger.warning(
            "%s: rebuilt ONNX form rejected (%s); serving without it.", artifact.name, problem
        )
        return None
    write_generic(artifact, sha256, onnx_bytes)
    runtime.engine_note = _rebuilt(artifact, sha256)
    return runtime
