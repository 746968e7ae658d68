"""What registering a model file asks of the ML layer: open it safely, learn its signature,
check that it predicts, and compile it where that is safe. No database: the catalogue
(``apps/endpoints/catalogue/register.py``) records what this finds, or nothing when it refuses.

A file is checked before it is recorded. It must load (a ``.skops`` file with the
operator's trusted types; a joblib pickle only where the caller allows pickles), be a
classifier or a regressor (or one of this project's Adult bundles), and predict on its
input example, or on a generated row when there is none. Any failure is ``ModelRejected``
(400) saying why.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apps.core.errors import ModelRejected, ServiceError
from apps.ml import artifacts, codecs, compiled, signature
from apps.ml.income_classifier import WRAPPERS, IncomeClassifier
from apps.ml.income_classifier.base import is_bundle
from apps.ml.runtime import Runtime
from apps.ml.signature import CLASSIFICATION, Signature
from apps.ml.sklearn_runtime import SklearnRuntime

if TYPE_CHECKING:
    import pandas as pd

SKLEARN = "sklearn"  # the runtime kind (MLAlgorithm.wrapper) of a model from a plain file
EXAMPLE_MAX_BYTES = 5 * 1024 * 1024
EXAMPLE_MAX_ROWS = 10_000
CARD_EXAMPLE_ROWS = 5  # rows of the example kept in the model card
VERIFIED_ROWS = 256  # rows of the example predicted before a model is recorded
GENERATED_ROWS = 64  # rows made up from the signature to check a compiled form on


@dataclass
class Intake:
    """Everything the catalogue records about a model that passed."""

    kind: str  # MLAlgorithm.wrapper: "sklearn", or the Adult wrapper's key
    runtime: Runtime
    signature: Signature
    example: list[dict[str, Any]]  # a few records of the input example, for the card
    serving: dict[str, Any]  # which engine serves, and why
    sklearn_version: str
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)  # warnings for whoever registers it


def inspect(
    path: Path,
    *,
    sha256: str,
    trusted: Sequence[str],
    allow_pickle: bool,
    example: bytes | None = None,
    target_column: str | None = None,
    compile: bool = True,
    kind: str | None = None,
) -> Intake:
    """Check the model file at ``path`` (inside the artifacts folder, with ``sha256``)."""
    if not artifacts.is_skops(path.name) and not allow_pickle:
        raise ModelRejected(
            "A joblib or pickle file runs code when it is loaded, so it is refused here: "
            "save the model with skops.io.dump (a .skops file), or an operator can set "
            "ALLOW_PICKLE_UPLOADS=1, or register it with manage.py register_model."
        )
    model, notes, trained_with = _load(path, sha256, trusted)
    frame = _read_example(example, target_column) if example is not None else None
    if is_bundle(model):
        return _adult(model, path, sha256, kind=kind, compile=compile, notes=notes)
    if kind not in (None, SKLEARN):
        raise ModelRejected(f"The file is not an Adult bundle, so it cannot use {kind!r}.")
    if frame is not None:
        frame = _feature_columns(model, frame, notes)
    inferred = signature.infer(model, frame)
    runtime = SklearnRuntime(model, inferred)
    rows = _records(frame) if frame is not None else signature.generated_rows(inferred, 1)
    _check_predicts(
        runtime, rows[:VERIFIED_ROWS], "input example" if frame is not None else "a generated row"
    )
    serving = _compile(model, runtime, rows, compile)
    return Intake(
        kind=SKLEARN,
        runtime=runtime,
        signature=inferred,
        example=rows[:CARD_EXAMPLE_ROWS],
        serving=serving,
        sklearn_version=trained_with,
        metrics={},
        notes=notes,
    )


def _load(path: Path, sha256: str, trusted: Sequence[str]) -> tuple[Any, list[str], str]:
    """The model, notes for the operator, and the scikit-learn version it was saved with."""
    import sklearn
    from sklearn.exceptions import InconsistentVersionWarning

    notes: list[str] = []
    trained_with = sklearn.__version__
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        try:
            model, _ = artifacts.load_verified(path.parent, path.name, sha256, trusted=trusted)
        except ModelRejected:  # untrusted types, a file that is not skops: said as it is
            raise
        except ServiceError as exc:
            raise ModelRejected(exc.message, details=exc.details) from exc
        except Exception as exc:  # a damaged file, or a class this server does not have
            raise ModelRejected(
                f"The file does not load: {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
    for warning in caught:
        if isinstance(warning.message, InconsistentVersionWarning):
            trained_with = warning.message.original_sklearn_version
    if trained_with != sklearn.__version__:
        notes.append(
            f"The model was saved with scikit-learn {trained_with}; this server runs "
            f"{sklearn.__version__}. Models are only reliable on the version they were saved with."
        )
    return model, notes, trained_with


def _adult(
    bundle: Any, path: Path, sha256: str, *, kind: str | None, compile: bool, notes: list[str]
) -> Intake:
    key = kind or IncomeClassifier.wrapper_key
    if key not in WRAPPERS:
        raise ModelRejected(f"Unknown Adult wrapper {key!r}.")
    try:
        runtime = WRAPPERS[key](bundle, artifact_name=path.name, artifact_sha256=sha256)
    except ServiceError as exc:
        raise ModelRejected(exc.message) from exc
    runtime._artifacts_root = path.parent
    rows = signature.generated_rows(runtime.signature, 1)
    _check_predicts(runtime, rows, "a generated row")
    if compile:
        runtime.compile(path)
    reason = (
        "reproduced scikit-learn on the bundle's verification sample"
        if runtime.compiled is not None
        else "not compiled (see the server log)"
    )
    return Intake(
        kind=key,
        runtime=runtime,
        signature=runtime.signature,
        example=rows,
        serving={"engine": runtime.engine, "reason": reason},
        sklearn_version=runtime.sklearn_version,
        metrics=dict(runtime.metrics),
        notes=notes,
    )


def _read_example(data: bytes, target_column: str | None) -> pd.DataFrame:
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


def _feature_columns(model: Any, frame: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """The example's columns that the model takes (a model fitted on a DataFrame names
    them); the others are left out, with a note."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return frame
    wanted = [str(n) for n in names]
    extra = [c for c in frame.columns if c not in wanted]
    if extra:
        notes.append(f"Columns of the input example the model does not take: {', '.join(extra)}.")
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ModelRejected(
            f"The input example lacks the model's feature(s): {', '.join(missing)}."
        )
    return frame[wanted]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The example's rows as JSON records (gaps as null), as a client would send them."""
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return records


def _check_predicts(runtime: Runtime, rows: list[dict[str, Any]], what: str) -> None:
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


def _compile(
    model: Any, runtime: SklearnRuntime, rows: list[dict[str, Any]], wanted: bool
) -> dict[str, Any]:
    if not wanted:
        return {"engine": "sklearn", "reason": "compiled inference is off (ML_COMPILED_INFERENCE)"}
    frame = verification_frame(runtime.signature, rows[:VERIFIED_ROWS])
    try:
        expected = runtime.predict(frame)
    except ServiceError:  # a generated row the model does not take: try the example alone
        frame = codecs.frame_from_records(rows[:VERIFIED_ROWS], runtime.signature)
        expected = runtime.predict(frame)
    _, card = compiled.compile_generic(model, runtime.signature, frame, expected)
    return card


def verification_frame(sig: Signature, example: list[dict[str, Any]]) -> codecs.Frame:
    """Rows a worker checks a rebuilt ONNX form on: the card's example and generated rows."""
    return codecs.frame_from_records(
        list(example) + signature.generated_rows(sig, GENERATED_ROWS), sig
    )
