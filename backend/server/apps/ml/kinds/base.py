"""What every kind of model provides, and what registration and loading hand it.

A ``Kind`` says how to recognise its artifacts (an object loaded from a joblib or skops
file that it ``claims``, or a pickle-free file of its own format by suffix), how to
``inspect`` one at registration (its signature, task, classes, and which engine serves
it, verified), and how to ``load`` a registered version into a runtime. The table of
kinds is ``kinds/__init__.py``; registration (``intake.py``) and the registry
(``registry.py``) only ever look a kind up there.

Also here, shared by every kind's registration: the input example read as the rows a
model is checked on, and the checks themselves.
"""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from apps.core.errors import ModelRejected, ServiceError
from apps.ml import codecs, compiled, signature
from apps.ml.answer import ModelOutput
from apps.ml.codecs import Frame
from apps.ml.runtime import Runtime, model_failed
from apps.ml.signature import CLASSIFICATION, REGRESSION, Feature, Signature

if TYPE_CHECKING:
    import pandas as pd

EXAMPLE_MAX_BYTES = 5 * 1024 * 1024
EXAMPLE_MAX_ROWS = 10_000
CARD_EXAMPLE_ROWS = 5  # rows of the example kept in the model card
VERIFIED_ROWS = 256  # rows of the example predicted before a model is recorded
GENERATED_ROWS = 64  # rows made up from the signature to check a compiled form on


class Servable(Protocol):
    """What loading needs to know of a registered version (``MLAlgorithm`` has all of it)."""

    pk: Any
    name: str
    version: str
    wrapper: str  # the kind's key (or one of its aliases)
    artifact: str
    artifact_sha256: str
    features: Any
    task: str
    classes: Any
    outputs: Any
    serving: Any
    example: Any


def signature_of(version: Servable) -> Signature:
    """The signature recorded with a version (its model card), without loading it."""
    return Signature.from_card(
        features=version.features,
        task=version.task,
        classes=version.classes,
        outputs=version.outputs,
    )


@dataclass
class Intake:
    """Everything the catalogue records about a model that passed."""

    kind: str  # MLAlgorithm.wrapper: the kind's key
    runtime: Runtime
    signature: Signature
    example: list[dict[str, Any]]  # a few records of the input example, for the card
    serving: dict[str, Any]  # which engine serves, and why
    sklearn_version: str  # the library that saved it ("1.9.1"; "lightgbm 4.7.0" ...)
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)  # warnings for whoever registers it


@dataclass
class Request:
    """What registration hands a kind: the file (in the artifacts folder), the input
    example's rows (feature columns only), and what the operator said of it."""

    path: Path
    sha256: str
    example: pd.DataFrame | None
    compile: bool  # try a verified ONNX form
    classes: tuple[str, ...] = ()  # the upload form's, for a file that lacks its classes
    trained_with: str = ""  # the library version that saved it, where the loader knows
    notes: list[str] = field(default_factory=list)


@dataclass
class Source:
    """What the registry hands a kind to load a version: its artifact, checked against
    its recorded sha256 by whichever reads it (``artifacts.load_verified``), and the
    version's card."""

    root: Path  # the artifacts folder
    path: Path  # the artifact inside it
    version: Servable
    compile: bool  # serve a verified ONNX form where the card recorded one
    trusted: tuple[str, ...]  # the types a .skops artifact may hold

    @property
    def signature(self) -> Signature:
        return signature_of(self.version)

    @property
    def serving(self) -> dict[str, Any]:
        return dict(self.version.serving or {})


class Kind(ABC):
    """A kind of model: see the module doc. Subclasses set ``key`` (what the catalogue
    stores) and implement ``inspect`` and ``load``."""

    key: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()  # other stored keys that load as this kind
    # Pickle-free files of this kind's own format, by suffix (``.txt``, ``.json`` ...):
    # registered over HTTP without ALLOW_PICKLE_UPLOADS.
    native_suffixes: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""  # one line, for the command's help

    def claims(self, model: Any) -> bool:
        """Whether a model loaded from a joblib or skops file is of this kind."""
        return False

    def claims_file(self, path: Path) -> bool:
        """Whether a file is in a format of this kind's own (not a pickle)."""
        return path.suffix.lower() in self.native_suffixes

    @abstractmethod
    def inspect(self, model: Any, request: Request) -> Intake:
        """Check ``model`` (the loaded object; None for a file of the kind's own format,
        at ``request.path``) and say what to record; ``ModelRejected`` when it cannot
        serve."""

    @abstractmethod
    def load(self, source: Source) -> Runtime:
        """The runtime that serves a registered version, from its artifact."""


# -- the input example and the checks ----------------------------------------------------


def read_example(data: bytes, target_column: str | None) -> pd.DataFrame:
    """The input example's rows, without the target column."""
    import pandas as pd

    if len(data) > EXAMPLE_MAX_BYTES:
        raise ModelRejected(f"The input example is over {EXAMPLE_MAX_BYTES // 2**20} MB.")
    try:
        frame = pd.read_csv(io.BytesIO(data), nrows=EXAMPLE_MAX_ROWS, encoding="utf-8-sig")
    except Exception as exc:  # pandas' parser errors, an empty file, bad bytes
        raise ModelRejected(f"The input example is not a CSV file: {str(exc)[:200]}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise ModelRejected("The input example has a header but no rows.")
    if target_column:
        if target_column not in frame.columns:
            raise ModelRejected(
                f"The input example has no column {target_column!r} (target_column)."
            )
        frame = frame.drop(columns=[target_column])
    return frame


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The example's rows as JSON records (gaps as null), as a client would send them."""
    rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return rows


def check_predicts(runtime: Runtime, rows: list[dict[str, Any]], what: str) -> None:
    """``ModelRejected`` unless ``runtime`` answers ``rows`` with its own classes."""
    try:
        answers = runtime.compute_predictions(rows)
    except ServiceError as exc:
        raise ModelRejected(
            f"The model does not predict on {what}: {exc.message}", details=exc.details
        ) from exc
    for answer in answers:  # NaN or infinity: check_finite raised above
        if "label" in answer and runtime.signature.task == CLASSIFICATION:
            if answer["label"] not in runtime.signature.classes:
                raise ModelRejected(
                    f"The model predicts {answer['label']!r}, which is not one of its classes."
                )


def rows_to_check(example: pd.DataFrame | None, sig: Signature) -> tuple[list[dict[str, Any]], str]:
    """The records a model is checked on at registration, and what they are called in a
    refusal: its input example's, else one generated row."""
    if example is not None:
        return records(example), "input example"
    return signature.generated_rows(sig, 1), "a generated row"


def verification_frame(sig: Signature, example: Sequence[dict[str, Any]]) -> codecs.Frame:
    """Rows a compiled form is checked on: the card's example and generated rows."""
    return codecs.frame_from_records(
        list(example) + signature.generated_rows(sig, GENERATED_ROWS), sig
    )


# -- a model in its library's own format ------------------------------------------------
# Gradient-boosted trees saved by LightGBM or XGBoost themselves: read without pickle, fed
# one matrix of numbers, answered by the library's own predict. What the kinds of those
# libraries (``lightgbm.py``, ``xgboost.py``) share.


class BoosterRuntime(Runtime):
    """A booster in its library's format: ``predict`` takes a float64 matrix (features in
    signature order) and answers a classifier's probabilities (one column per class, or
    the positive class's alone) or a regressor's values."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        signature: Signature,
        *,
        engine: str,
        probabilities: bool = True,
        parallel_rows: bool = False,
    ) -> None:
        self._predict = predict
        self.signature = signature
        self.engine = engine
        self._probabilities = probabilities  # False: predict answers class indices
        self.parallel_rows = parallel_rows  # ``predict`` is safe on several threads at once

    def encode(self, frame: Frame) -> np.ndarray:
        return frame.to_matrix()

    def predict_encoded(self, encoded: np.ndarray) -> ModelOutput:
        try:
            raw = np.asarray(self._predict(encoded), dtype=np.float64)
        except (MemoryError, RecursionError):
            raise
        except Exception as exc:  # any library error is about the input
            raise model_failed(exc, rows=len(encoded)) from exc
        if self.signature.task == REGRESSION:
            return ModelOutput(values=raw.reshape(len(encoded)), engine=self.engine)
        classes = np.array(self.signature.classes, dtype=object)
        if not self._probabilities:  # class indices
            return ModelOutput(labels=classes[raw.astype(np.int64)], engine=self.engine)
        probabilities = raw if raw.ndim == 2 else np.column_stack([1.0 - raw, raw])
        labels = classes[np.argmax(probabilities, axis=1)]
        return ModelOutput(labels=labels, probabilities=probabilities, engine=self.engine)


def booster_signature(
    request: Request,
    *,
    names: Sequence[str] | None,
    features: int,
    task: str,
    classes: int = 0,
    probabilities: bool = True,
    spelled: Callable[[str], str] = str,
) -> Signature:
    """The signature of a booster that takes ``features`` numbers (named ``names`` in its
    file, if it names them, as ``spelled`` writes a name) and answers ``task`` with
    ``classes`` classes. The input example gives the names clients send and which features
    may be missing; the upload form gives the classes (else ``0``, ``1``, ...)."""
    example = request.example
    if example is not None:
        given = [str(c) for c in example.columns]
        if len(given) != features:
            raise ModelRejected(
                f"The input example has {len(given)} columns; the model takes {features} "
                "features (leave out the target, or name it with target_column)."
            )
        if names and [spelled(n) for n in given] != list(names):
            raise ModelRejected(
                "The input example's columns are not the model's features in its order: "
                f"the file has {', '.join(names[:8])}{'...' if len(names) > 8 else ''}."
            )
        text = [c for c in given if not _numeric(example[c])]
        if text:
            raise ModelRejected(
                f"Columns that are not numbers: {', '.join(text)}. A model in its library's "
                "own format takes numbers; register a pipeline that encodes them (joblib, "
                "with manage.py register_model) instead."
            )
        cells = [Feature(n, "number", required=signature.complete(example[n])) for n in given]
    else:
        given = list(names) if names else [f"x{i}" for i in range(features)]
        cells = [Feature(n, "number") for n in given]
    labels: tuple[str, ...] = ()
    if task == CLASSIFICATION:
        labels = request.classes or tuple(str(i) for i in range(classes))
        if len(labels) != classes:
            raise ModelRejected(
                f"The model has {classes} classes; the form named {len(labels)}: "
                f"{', '.join(labels)}."
            )
        if len(set(labels)) != len(labels):
            raise ModelRejected(f"The classes {list(labels)} are not distinct.")
    outputs = signature.outputs_for(task, labels, probabilities=probabilities, imputed=False)
    return Signature(tuple(cells), task, labels, outputs)


def _numeric(column: pd.Series) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(column)) and not pd.api.types.is_bool_dtype(column)


def compiled_card(
    model: Any,
    runtime: Runtime,
    rows: list[dict[str, Any]],
    *,
    wanted: bool,
    engine: str,
    library: str,
    convert: compiled.Convert | None = None,
) -> dict[str, Any]:
    """Which engine serves a model just checked, and why: its verified ONNX form where it
    converts (skl2onnx, or the kind's own ``convert``) and reproduces ``runtime`` on the
    example and generated rows; else ``engine`` (``library``'s code) serves it."""
    if not wanted:
        return {"engine": engine, "reason": "compiled inference is off (ML_COMPILED_INFERENCE)"}
    frame = verification_frame(runtime.signature, rows[:VERIFIED_ROWS])
    try:
        expected = runtime.predict(frame)
    except ServiceError:  # a generated row the model does not take: the example alone
        frame = codecs.frame_from_records(rows[:VERIFIED_ROWS], runtime.signature)
        expected = runtime.predict(frame)
    _, card = compiled.compile_generic(
        model, runtime.signature, frame, expected, convert=convert, engine=engine, library=library
    )
    return card


def recorded_form(
    source: Source, runtime: Runtime, model: Any, convert: compiled.Convert | None = None
) -> Runtime:
    """What serves a loaded version: its recorded ONNX form (cached beside the artifact
    under its recorded sha256, else converted again and checked against ``runtime``), or
    ``runtime`` itself where the card recorded none."""
    version, serving = source.version, source.serving
    if not (source.compile and serving.get("engine") == "onnx"):
        return runtime
    sha256 = version.artifact_sha256
    cached = compiled.load_generic(source.path, sha256, runtime.signature, serving)
    if cached is not None:
        return cached
    rebuilt = compiled.rebuild_generic(
        model,
        runtime.signature,
        serving,
        verification_frame(runtime.signature, list(version.example or [])),
        runtime,
        artifact=source.path,
        sha256=sha256,
        convert=convert,
    )
    return rebuilt if rebuilt is not None else runtime
