"""The ``sklearn`` kind: any fitted scikit-learn estimator or pipeline (or a model with
scikit-learn's API), from a joblib or skops file, served as it is or by its verified ONNX
form.

Registration infers its signature (``signature.infer``), checks that it predicts on its
input example (or a generated row), and tries an ONNX form (``compiled.compile_generic``),
kept only where it reproduces the model. Loading serves the recorded ONNX form when its
cached file still has the recorded sha256 (no unpickling), else the artifact.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from apps.core.errors import ModelRejected
from apps.ml import artifacts, compiled, signature
from apps.ml.answer import ModelOutput
from apps.ml.codecs import Frame
from apps.ml.kinds.base import (
    CARD_EXAMPLE_ROWS,
    VERIFIED_ROWS,
    Intake,
    Kind,
    Request,
    Source,
    check_predicts,
    compiled_card,
    rows_to_check,
    verification_frame,
)
from apps.ml.runtime import Runtime, model_failed, only_sklearn, single_threaded
from apps.ml.signature import CLASSIFICATION, Signature

if TYPE_CHECKING:
    import pandas as pd


class SklearnKind(Kind):
    key = "sklearn"
    summary = "any fitted scikit-learn estimator or pipeline (joblib or .skops)"
    library = "scikit-learn"  # whose predict answers (what a card says ONNX reproduced)

    def claims(self, model: Any) -> bool:
        return hasattr(model, "predict")

    def inspect(self, model: Any, request: Request) -> Intake:
        frame = request.example
        if frame is not None:
            frame = _feature_columns(model, frame, request.notes)
        inferred = signature.infer(model, frame)
        runtime = SklearnRuntime(model, inferred)
        rows, what = rows_to_check(frame, inferred)
        check_predicts(runtime, rows[:VERIFIED_ROWS], what)
        return Intake(
            kind=self.key,
            runtime=runtime,
            signature=inferred,
            example=rows[:CARD_EXAMPLE_ROWS],
            serving=self._card(model, runtime, rows, request.compile),
            sklearn_version=request.trained_with,
            metrics={},
            notes=request.notes,
        )

    def load(self, source: Source) -> Runtime:
        version, serving, sig = source.version, source.serving, source.signature
        onnx = source.compile and serving.get("engine") == "onnx"
        if onnx:
            # The artifact must still be the recorded one, even when it is not unpickled.
            artifacts.verify_hash(source.root, version.artifact, version.artifact_sha256)
            cached = compiled.load_generic(source.path, version.artifact_sha256, sig, serving)
            if cached is not None:
                return cached
        model, _ = artifacts.load_verified(
            source.root, version.artifact, version.artifact_sha256, trusted=source.trusted
        )
        runtime = SklearnRuntime(model, sig)
        if onnx:
            self.prepare_conversion()
            rebuilt = compiled.rebuild_generic(
                self.convertible(model),
                sig,
                serving,
                verification_frame(sig, list(version.example or [])),
                runtime,
                artifact=source.path,
                sha256=version.artifact_sha256,
            )
            if rebuilt is not None:
                return rebuilt
        return runtime

    def _card(
        self, model: Any, runtime: Runtime, rows: list[dict[str, Any]], wanted: bool
    ) -> dict[str, Any]:
        if wanted:
            self.prepare_conversion()
            model = self.convertible(model)
        return compiled_card(
            model, runtime, rows, wanted=wanted, engine="sklearn", library=self.library
        )

    def prepare_conversion(self) -> None:
        """What skl2onnx needs before it converts a model of this kind (kinds beyond
        scikit-learn's own register their converters here)."""

    def convertible(self, model: Any) -> Any:
        """The model as skl2onnx is given it (a kind may hand it a copy it adapted)."""
        return model


def final_estimator(model: Any) -> Any:
    """The estimator that answers: the last step of a pipeline, else the model itself."""
    from sklearn.pipeline import Pipeline

    return model.steps[-1][1] if isinstance(model, Pipeline) and model.steps else model


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


class SklearnRuntime(Runtime):
    engine = "sklearn"

    def __init__(self, model: Any, signature: Signature) -> None:
        self.model = single_threaded(model)
        self.signature = signature
        self.parallel_rows = only_sklearn(model)
        # Fitted on a DataFrame: it is given one (a ColumnTransformer picks columns by
        # name), unless it takes numbers by position anyway (``_positional``). Fitted on
        # an array: it is given the numbers as one matrix.
        self._wants_frame = _fitted_on_a_frame(model) and not _positional(model, signature)
        self._head, self._final = _split(model)
        self._probabilities = "probabilities" in signature.outputs or (
            "probability" in signature.outputs
        )
        self._labels_from_probabilities = self._probabilities and _predict_is_argmax(self._final)

    def encode(self, frame: Frame) -> tuple[Any, int]:
        return (frame.to_pandas() if self._wants_frame else frame.to_matrix()), frame.rows

    def predict_encoded(self, encoded: tuple[Any, int]) -> ModelOutput:
        x, rows = encoded
        try:
            if self.signature.task == CLASSIFICATION:
                return self._classify(x)
            values = np.asarray(self.model.predict(x), dtype=np.float64)
        except (MemoryError, RecursionError):
            raise
        except Exception as exc:  # any estimator error is about the input
            raise model_failed(exc, rows=rows) from exc
        if values.ndim != 1:
            raise ModelRejected("The regressor answers more than one value a row.")
        return ModelOutput(values=values, engine=self.engine)

    def _classify(self, x: Any) -> ModelOutput:
        # A pipeline's steps transform once for both calls: what Pipeline.predict and
        # Pipeline.predict_proba would each do, done once.
        xt = self._head.transform(x) if self._head is not None else x
        probabilities = None
        if self._probabilities:
            probabilities = np.asarray(self._final.predict_proba(xt), dtype=np.float64)
        if self._labels_from_probabilities:
            assert probabilities is not None
            labels = np.asarray(self._final.classes_)[np.argmax(probabilities, axis=1)]
        else:
            labels = np.asarray(self._final.predict(xt))
        text = np.array([str(v) for v in labels.tolist()], dtype=object)
        return ModelOutput(labels=text, probabilities=probabilities, engine=self.engine)


# Classifiers whose predict is, by scikit-learn's definition, the class of the highest
# predict_proba (up to exact ties, where argmax takes the first class): for them one call
# gives both, where two would run the trees twice. For a one-row HistGradientBoosting
# call that halves the model's time. Not SVC (Platt scaling can disagree with predict)
# nor anything outside scikit-learn, whose predict may be anything.
_ARGMAX_CLASSIFIERS = frozenset(
    {
        "sklearn.ensemble.RandomForestClassifier",
        "sklearn.ensemble.ExtraTreesClassifier",
        "sklearn.ensemble.GradientBoostingClassifier",
        "sklearn.ensemble.HistGradientBoostingClassifier",
        "sklearn.tree.DecisionTreeClassifier",
        "sklearn.tree.ExtraTreeClassifier",
        "sklearn.linear_model.LogisticRegression",
    }
)


def _predict_is_argmax(estimator: Any) -> bool:
    kind = type(estimator)
    module = kind.__module__.split("._")[0]  # sklearn.ensemble._forest -> sklearn.ensemble
    classes = getattr(estimator, "classes_", None)
    return (
        f"{module}.{kind.__qualname__}" in _ARGMAX_CLASSIFIERS
        and isinstance(classes, np.ndarray)
        and classes.ndim == 1  # one output
    )


# A scikit-learn step fitted on a DataFrame and given an array in the same column order
# says so ("X does not have valid feature names, ...") and computes the same. The runtime
# does that on purpose (``_positional``): the columns are in the order the model recorded.
# The filter is process-wide (catch_warnings around each call is not thread-safe), so a
# process that serves models shows this warning for no one.
warnings.filterwarnings(
    "ignore", message="X does not have valid feature names", category=UserWarning
)

# Steps that take their input by position even when fitted with column names. Not
# sklearn.compose (ColumnTransformer picks columns by name), FunctionTransformer (runs the
# user's code, which may index by name) or nested pipelines and unions (which may hold
# either).
_BY_NAME = ("sklearn.compose", "sklearn.pipeline")


def _positional(model: Any, signature: Signature) -> bool:
    """Whether ``model`` computes the same from a float64 matrix in signature order as from
    a DataFrame (up to the last bits of a float: BLAS sums a row-major matrix in another
    order than pandas' column-major one), so that one-row calls skip the DataFrame.
    scikit-learn validates a DataFrame column by column: 0.73 ms against 0.18 for the same
    row as an array through a StandardScaler of 30 features (bench/any_model_bench.py's)."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    if not signature.all_numbers:
        return False
    names = getattr(model, "feature_names_in_", None)
    if names is None or [str(n) for n in names] != list(signature.names):
        return False
    steps = [step for _, step in model.steps] if isinstance(model, Pipeline) else [model]
    for step in steps:
        if step in ("passthrough", None):
            continue
        module = type(step).__module__
        if not module.startswith("sklearn.") or module.startswith(_BY_NAME):
            return False
        if isinstance(step, FunctionTransformer):
            return False
    return True


def _fitted_on_a_frame(model: Any) -> bool:
    """Whether the model, or a step of its pipeline, recorded DataFrame column names (a
    first step of the user's own may not record them and pass the frame on)."""
    from sklearn.pipeline import Pipeline

    steps = [step for _, step in model.steps] if isinstance(model, Pipeline) else [model]
    return any(getattr(step, "feature_names_in_", None) is not None for step in [model, *steps])


def _split(model: Any) -> tuple[Any, Any]:
    """(the steps before the final estimator as one transformer or None, the final one)."""
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline) and len(model.steps) > 1:
        return model[:-1], model[-1]
    return None, model
