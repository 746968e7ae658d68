"""The runtime interface: what every kind of model answers, and what it may not."""

from __future__ import annotations

import numpy as np
import pytest

from apps.ml.codecs import Frame, ModelOutput
from apps.ml.runtime import ModelFailed, Runtime, check_finite
from apps.ml.signature import Feature, Signature


class Answers(Runtime):
    """A runtime that answers what it is told to."""

    signature = Signature((Feature("x0", "number"),), "regression", (), ("prediction", "status"))

    def __init__(self, values: list[float]) -> None:
        self.values = np.array(values)

    def predict_encoded(self, encoded: Frame) -> ModelOutput:
        return ModelOutput(values=self.values[: encoded.rows])


def test_one_record_is_a_batch_of_one() -> None:
    assert Answers([2.5]).compute_prediction({"x0": 1}) == {"prediction": 2.5, "status": "OK"}


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_model_answering_nan_or_infinity_is_a_400_not_a_broken_json(value: float) -> None:
    # JSON cannot carry NaN: the renderer would fail, a 500. An input far outside the
    # training data is the client's to change.
    with pytest.raises(ModelFailed, match="not a finite number"):
        Answers([value]).compute_predictions([{"x0": 1e308}])


def test_a_batch_names_the_line_of_the_first_non_finite_answer() -> None:
    output = ModelOutput(probabilities=np.array([[0.5, 0.5], [0.2, 0.8], [np.nan, 1.0]]))
    with pytest.raises(ModelFailed, match=r"^Line 12: the model answered"):
        check_finite(output, first_line=10)
    check_finite(ModelOutput(values=np.array([1.0, -2.0])), first_line=2)  # finite: no error
