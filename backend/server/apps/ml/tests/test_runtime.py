"""The runtime interface: what every kind of model answers, and what it may not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from apps.core.errors import ModelFailed
from apps.ml.answer import ModelOutput
from apps.ml.codecs import Frame
from apps.ml.runtime import Runtime, check_finite
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


def _classifiers() -> list[Any]:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

    return [
        RandomForestClassifier(n_estimators=10, random_state=0),
        ExtraTreesClassifier(n_estimators=10, random_state=0),
        GradientBoostingClassifier(n_estimators=10, random_state=0),
        HistGradientBoostingClassifier(max_iter=10),
        DecisionTreeClassifier(random_state=0),
        ExtraTreeClassifier(random_state=0),
        LogisticRegression(max_iter=5000),
        CalibratedClassifierCV(SVC(), ensemble=False),  # not on the list: predict by itself
    ]


@pytest.mark.parametrize("index", range(len(_classifiers())))
@pytest.mark.parametrize("load", ["load_iris", "load_breast_cancer", "load_wine"])
def test_labels_are_what_predict_answers(index: int, load: str) -> None:
    """Where the runtime takes the labels from predict_proba, they are predict's."""
    import sklearn.datasets

    from apps.ml import signature as sig
    from apps.ml.codecs import frame_from_records
    from apps.ml.kinds.sklearn import SklearnRuntime

    model = _classifiers()[index]
    data = getattr(sklearn.datasets, load)(as_frame=True)
    model.fit(data.data, data.target)
    runtime = SklearnRuntime(model, sig.infer(model, data.data.head(20)))
    assert runtime._labels_from_probabilities == (type(model).__name__ != "CalibratedClassifierCV")
    records = data.data.to_dict("records")
    got = runtime.predict(frame_from_records(records, runtime.signature))
    assert got.labels is not None
    assert got.labels.tolist() == [str(v) for v in model.predict(data.data).tolist()]


def test_numbers_go_to_scikit_learn_as_a_matrix_where_that_computes_the_same() -> None:
    """A DataFrame costs scikit-learn a check per column on every call; steps that take
    numbers by position get the matrix and answer what the DataFrame gets."""
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from apps.ml import signature as sig
    from apps.ml.codecs import frame_from_records
    from apps.ml.kinds.sklearn import SklearnRuntime

    data = load_diabetes(as_frame=True)
    x, y = data.data, data.target
    models = {
        "scaler and boosting": (
            make_pipeline(StandardScaler(), HistGradientBoostingRegressor()),
            False,
        ),
        "bare ridge": (Ridge(), False),
        "column transformer": (
            make_pipeline(make_column_transformer((StandardScaler(), ["bmi", "bp"])), Ridge()),
            True,
        ),
        "user function": (
            make_pipeline(FunctionTransformer(lambda f: f[["bmi", "bp"]]), Ridge()),
            True,
        ),
    }
    records = x.head(50).to_dict("records")
    for name, (model, wants_frame) in models.items():
        model.fit(x, y)
        runtime = SklearnRuntime(model, sig.infer(model, x.head(20)))
        assert runtime._wants_frame is wants_frame, name
        got = runtime.predict(frame_from_records(records, runtime.signature))
        assert got.values is not None
        expected = model.predict(pd.DataFrame(records))
        # The same up to the last bits: a DataFrame becomes a column-major array, the matrix
        # is row-major, and BLAS sums a dot product in another order.
        assert np.allclose(got.values, expected, rtol=1e-12, atol=0), name


def test_the_matrix_does_not_fill_the_log_with_feature_name_warnings() -> None:
    """scikit-learn warns on every call that gives an array to a step fitted on a
    DataFrame; the runtime does it on purpose. In a process of its own, as pytest resets
    the warning filters for every test."""
    import subprocess
    import sys
    from pathlib import Path

    script = """
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
data = load_diabetes(as_frame=True)
model = Ridge().fit(data.data, data.target)
model.predict(data.data.head(3).to_numpy())  # warns: the check below is not vacuous
from apps.ml import signature as sig
from apps.ml.codecs import frame_from_records
from apps.ml.kinds.sklearn import SklearnRuntime
runtime = SklearnRuntime(model, sig.infer(model, data.data.head(20)))
assert not runtime._wants_frame
runtime.predict(frame_from_records(data.data.head(3).to_dict("records"), runtime.signature))
"""
    server = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-W", "always::UserWarning", "-c", script],
        cwd=server,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("X does not have valid feature names") == 1, done.stderr
