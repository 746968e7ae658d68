"""The one interface every kind of model implements, in the spirit of MLServer's ``MLModel``.

A runtime is loaded from an artifact and a signature (by a kind, ``kinds/``, for the
registry) and predicts one ``Frame`` per call: a single prediction is a batch of one. The
runtimes there are:

- ``SklearnRuntime`` (``kinds/sklearn.py``): any fitted estimator or pipeline with
  scikit-learn's API (LightGBM's and XGBoost's joblib models among them);
- ``BoosterRuntime`` (``kinds/base.py``): a LightGBM or XGBoost model in its own format;
- ``OnnxRuntime`` (``compiled.py``): any of those compiled to ONNX, used only where it
  reproduced the model on its example and generated rows;
- ``IncomeClassifier`` (``income_classifier/``): the Adult bundles this project trains.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np

from apps.core.errors import ModelFailed
from apps.ml import codecs
from apps.ml.answer import Answer, ModelOutput, Prediction
from apps.ml.codecs import Frame
from apps.ml.signature import Signature

logger = logging.getLogger(__name__)

MAX_MODEL_MESSAGE = 300  # characters of an estimator's own error shown to the client


class Runtime(ABC):
    signature: Signature
    engine: str = ""  # "sklearn", "onnx": what serves the predictions (the model card says)
    # Where the serving form came from, when that is news for an operator (/readyz shows
    # it): e.g. a compiled cache that was not sealed with this service's key, rebuilt.
    engine_note: str = ""
    # Whether ``predict_encoded`` may run on several threads at once (``parallel.py`` cuts
    # a large batch into parts only then). Off unless the runtime knows its library is safe
    # to share between threads: LightGBM's Booster is not (microsoft/LightGBM#6142), and a
    # user's own estimator may keep state.
    parallel_rows: bool = False

    @cached_property
    def answer(self) -> Answer:
        """How this model answers, in every form (``answer.py``): made once."""
        return Answer(self.signature)

    def predict(self, frame: Frame) -> ModelOutput:
        """Predict every row of ``frame`` in one model call."""
        return self.predict_encoded(self.encode(frame))

    # A prediction in two steps, for the batch path: ``encode`` (Python work that holds
    # the GIL: the model's own input form) on the request's thread, ``predict_encoded``
    # (the model call, which mostly releases it) on the model's, so that on two cores the
    # two overlap across chunks instead of queueing for the GIL (``apps/endpoints/batch/score.py``).

    def encode(self, frame: Frame) -> Any:
        """The model's input for ``frame`` (by default the frame itself)."""
        return frame

    @abstractmethod
    def predict_encoded(self, encoded: Any) -> ModelOutput:
        """Predict what ``encode`` made."""

    def compute_predictions(self, records: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """JSON records in, answers out: check, convert, predict once, answer."""
        frame = codecs.frame_from_records(records, self.signature)
        output = self.predict(frame)
        check_finite(output)
        return self.answer.predictions(output)

    def compute_prediction(self, record: Mapping[str, Any]) -> Prediction:
        return self.compute_predictions([record])[0]


def model_failed(exc: Exception, *, rows: int) -> ModelFailed:
    message = f"{type(exc).__name__}: {exc}"
    if len(message) > MAX_MODEL_MESSAGE:
        message = message[:MAX_MODEL_MESSAGE] + "..."
    logger.warning("The model refused %d row(s): %s", rows, message)
    where = "this record" if rows == 1 else f"these {rows} rows"
    return ModelFailed(f"The model could not predict {where}: {message}")


def check_finite(output: ModelOutput, *, first_line: int | None = None) -> None:
    """A model answers numbers; NaN or infinity (an input far outside what it was trained
    on can give one) is not an answer, and JSON cannot carry it: a 400 for that input."""
    for array in (output.values, output.probabilities):
        if array is None:
            continue
        bad = ~np.isfinite(array)
        if bad.any():
            row = int(np.flatnonzero(bad.reshape(len(array), -1).any(axis=1))[0])
            where = f"Line {first_line + row}: the" if first_line is not None else "The"
            raise ModelFailed(
                f"{where} model answered a value that is not a finite number (NaN or "
                "infinity): the input may lie far outside what it was trained on."
            )


def only_sklearn(model: Any) -> bool:
    """Whether ``model`` and every estimator inside it (a pipeline's steps, a column
    transformer's) are scikit-learn's own: their predictions read fitted arrays only, and
    may run on several threads at once."""
    try:
        inner = model.get_params(deep=True).values()
    except Exception:
        return False
    estimators = [model, *(value for value in inner if hasattr(value, "fit"))]
    return all(type(e).__module__.startswith("sklearn.") for e in estimators)


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
