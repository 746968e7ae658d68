"""Any fitted scikit-learn estimator or pipeline, served as it is."""

from __future__ import annotations

from typing import Any

import numpy as np

from apps.core.errors import ModelRejected
from apps.ml.codecs import Frame, ModelOutput
from apps.ml.runtime import Runtime, model_failed
from apps.ml.signature import CLASSIFICATION, Signature


class SklearnRuntime(Runtime):
    engine = "sklearn"

    def __init__(self, model: Any, signature: Signature) -> None:
        self.model = single_threaded(model)
        self.signature = signature
        # Fitted on a DataFrame: it is given one (a ColumnTransformer picks columns by
        # name). Fitted on an array: it is given the numbers as one matrix.
        self._wants_frame = _fitted_on_a_frame(model)
        self._head, self._final = _split(model)
        self._probabilities = "probabilities" in signature.outputs or (
            "probability" in signature.outputs
        )

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
        labels = np.asarray(self._final.predict(xt))
        text = np.array([str(v) for v in labels.tolist()], dtype=object)
        probabilities = None
        if self._probabilities:
            probabilities = np.asarray(self._final.predict_proba(xt), dtype=np.float64)
        return ModelOutput(labels=text, probabilities=probabilities, engine=self.engine)


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


def single_threaded(model: Any) -> Any:
    """One row is answered faster without joblib's thread pool, and a server's workers
    already use the cores: every ``n_jobs`` in the model becomes 1."""
    try:
        params = model.get_params(deep=True)
    except Exception:  # a model without get_params keeps its own
        return model
    n_jobs = {name: 1 for name in params if name == "n_jobs" or name.endswith("__n_jobs")}
    if n_jobs:
        try:
            model.set_params(**n_jobs)
        except Exception:  # a model that refuses keeps its own
            pass
    return model
