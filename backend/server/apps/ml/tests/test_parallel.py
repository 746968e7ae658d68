"""A large batch's model call in parts on more than one thread (``ml/parallel.py``): the
same answers as one call, in order, for models of every kind trained here on scikit-learn's
data sets; errors of any part reach the caller; small batches stay one call."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.test import override_settings
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from apps.ml import codecs, parallel
from apps.ml import signature as sig
from apps.ml.answer import ModelOutput
from apps.ml.codecs import Frame
from apps.ml.kinds.sklearn import SklearnRuntime
from apps.ml.runtime import Runtime
from apps.ml.tests import models
from apps.ml.tests.test_generic_compiled import inspected, onnx_runtime


@override_settings(MODEL_THREADS=2, MODEL_PARALLEL_ROWS=2000)
def test_parts_start_at_the_threshold_and_cover_every_row_once() -> None:
    assert parallel.parts(1) == [slice(0, 1)]
    assert parallel.parts(1999) == [slice(0, 1999)]
    assert parallel.parts(2000) == [slice(0, 1000), slice(1000, 2000)]
    assert parallel.parts(10_001) == [slice(0, 5000), slice(5000, 10_001)]


@pytest.mark.parametrize(
    ("threads", "rows", "expected"),
    [
        (1, 100_000, 1),  # one thread: never cut
        (4, 3000, 3),  # no part smaller than half the threshold
        (4, 100_000, 4),
    ],
)
def test_parts_per_thread_setting(threads: int, rows: int, expected: int) -> None:
    with override_settings(MODEL_THREADS=threads, MODEL_PARALLEL_ROWS=2000):
        cuts = parallel.parts(rows)
    assert len(cuts) == expected
    covered = np.concatenate([np.arange(rows)[cut] for cut in cuts])
    assert covered.tolist() == list(range(rows))


class Recording(Runtime):
    """A runtime around another that records the thread and the rows of each call."""

    def __init__(self, inner: Runtime) -> None:
        self.inner = inner
        self.signature = inner.signature
        self.parallel_rows = inner.parallel_rows
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def encode(self, frame: Frame) -> Any:
        return frame.rows, self.inner.encode(frame)

    def predict_encoded(self, encoded: Any) -> ModelOutput:
        rows, inner = encoded
        with self.lock:
            self.calls.append((threading.current_thread().name, rows))
        return self.inner.predict_encoded(inner)


def _in_parts(runtime: Runtime, frame: Frame) -> tuple[ModelOutput, list[tuple[str, int]]]:
    recording = Recording(runtime)
    with override_settings(MODEL_THREADS=2, MODEL_PARALLEL_ROWS=200):
        got = parallel.predict(recording, parallel.split(recording, frame))
    return got, recording.calls


def _same(got: ModelOutput, expected: ModelOutput) -> None:
    for name in ("labels", "probabilities", "values"):
        a, b = getattr(got, name), getattr(expected, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.tolist() == b.tolist(), name  # exactly: rows are independent


def test_a_forest_classifier_answers_the_same_in_parts_on_two_threads() -> None:
    data = load_breast_cancer(as_frame=True)
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(data.data, data.target)
    runtime = SklearnRuntime(model, sig.infer(model, data.data.head(20)))
    frame = codecs.frame_from_records(data.data.to_dict("records"), runtime.signature)
    got, calls = _in_parts(runtime, frame)
    _same(got, runtime.predict(frame))
    assert sorted(rows for _, rows in calls) == [284, 285]
    threads = {name for name, _ in calls}
    assert len(threads) == 2 and any(name.startswith("model-part") for name in threads), calls


def test_a_regressor_answers_the_same_in_parts() -> None:
    data = load_diabetes(as_frame=True)
    model = RandomForestRegressor(n_estimators=10, random_state=0).fit(data.data, data.target)
    runtime = SklearnRuntime(model, sig.infer(model, data.data.head(20)))
    frame = codecs.frame_from_records(data.data.to_dict("records"), runtime.signature)
    got, calls = _in_parts(runtime, frame)
    _same(got, runtime.predict(frame))
    assert len(calls) == 2


def test_an_onnx_form_with_one_input_per_column_answers_the_same_in_parts(tmp_path: Path) -> None:
    """The ONNX runtime's encoded form is a dict of columns (text ones as strings): the
    frame is cut before it is encoded, so every runtime's form is cut the same way."""
    frame, y = models.mixed_frame()
    model = models.mixed_classifier()
    found = inspected(model, tmp_path, "mixed.joblib", models.example_csv(frame, y, rows=60))
    assert found.serving["layout"] == "columns", found.serving["reason"]
    runtime = onnx_runtime(found)
    records = json.loads(frame.to_json(orient="records"))
    checked = codecs.frame_from_records(records * (400 // len(records) + 1), found.signature)
    got, calls = _in_parts(runtime, checked)
    _same(got, runtime.predict(checked))
    assert len(calls) == 2


def test_a_frames_part_is_its_rows_and_keeps_its_matrix() -> None:
    """A frame of numbers only is built as one matrix (``codecs._numbers_only``): its parts
    keep theirs, views of the rows, so a runtime that takes the matrix still gets it."""
    data = load_breast_cancer(as_frame=True)
    signature = sig.infer(
        RandomForestClassifier(n_estimators=2).fit(data.data, data.target), data.data.head(20)
    )
    frame = codecs.frame_from_records(data.data.to_dict("records"), signature)
    assert frame.matrix is not None
    part = frame.part(slice(10, 20))
    assert part.rows == 10
    assert part.matrix is not None and part.matrix.tolist() == frame.matrix[10:20].tolist()
    assert np.shares_memory(part.matrix, frame.matrix)  # a view, not a copy
    for name, column in frame.columns.items():
        assert part.columns[name].tolist() == column[10:20].tolist()


def _cancer() -> tuple[Any, Any]:
    """The breast cancer data with names LightGBM keeps as they are (no spaces)."""
    data = load_breast_cancer(as_frame=True)
    return data.data.rename(columns=lambda name: name.replace(" ", "_")), data.target


def test_only_models_safe_on_several_threads_are_cut() -> None:
    """LightGBM's Booster is not safe to share between threads (microsoft/LightGBM#6142),
    nor is a user's own class known to be: their batches stay one call."""
    import lightgbm
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from apps.ml.runtime import only_sklearn

    x, y = _cancer()
    light = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(x, y)
    assert only_sklearn(make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y))
    assert not only_sklearn(light)
    assert not only_sklearn(make_pipeline(StandardScaler(), light))
    runtime = SklearnRuntime(light, sig.infer(light, x.head(20)))
    assert not runtime.parallel_rows
    frame = codecs.frame_from_records(x.to_dict("records"), runtime.signature)
    got, calls = _in_parts(runtime, frame)
    assert [rows for _, rows in calls] == [len(x)]  # one call, 569 rows past the threshold
    _same(got, runtime.predict(frame))


def test_boosters_xgboost_cut_lightgbm_not() -> None:
    import lightgbm
    import xgboost

    from apps.ml.kinds import lightgbm as light_kind
    from apps.ml.kinds import xgboost as xgb_kind

    x, y = _cancer()
    xgb = xgboost.XGBClassifier(n_estimators=5, n_jobs=1).fit(x, y)
    xgb_runtime = xgb_kind._runtime(xgb.get_booster(), sig.infer(xgb, x.head(20)), True)
    light = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(x, y)
    light_runtime = light_kind._runtime(light.booster_, sig.infer(light, x.head(20)))
    frame = codecs.frame_from_records(x.to_dict("records"), xgb_runtime.signature)
    got, calls = _in_parts(xgb_runtime, frame)
    assert len(calls) == 2
    _same(got, xgb_runtime.predict(frame))
    _, calls = _in_parts(light_runtime, frame)
    assert len(calls) == 1


class FailsOnNegatives(Runtime):
    parallel_rows = True

    def __init__(self) -> None:
        self.signature = sig.Signature((sig.Feature("x", "number"),), sig.REGRESSION)
        self.finished: list[int] = []
        self.delay = 0.0

    def predict_encoded(self, encoded: Any) -> ModelOutput:
        x = encoded.columns["x"]
        if (x < 0).any():
            raise ValueError("negative x")
        time.sleep(self.delay)  # still running when the other part fails
        self.finished.append(len(x))
        return ModelOutput(values=x * 2.0)


def test_an_error_in_any_part_reaches_the_caller_after_every_part_ended() -> None:
    """The caller's own part fails at once; the other part, on the pool, has ended when
    the error reaches the caller (no part outlives the request that made it)."""
    runtime = FailsOnNegatives()
    runtime.delay = 0.3
    values = [-1.0] * 300 + [1.0] * 300
    frame = codecs.frame_from_records([{"x": v} for v in values], runtime.signature)
    with override_settings(MODEL_THREADS=2, MODEL_PARALLEL_ROWS=200):
        encoded = parallel.split(runtime, frame)
        assert len(encoded) == 2
        with pytest.raises(ValueError, match="negative x"):
            parallel.predict(runtime, encoded)
    assert runtime.finished == [300]


def test_an_error_in_the_pools_part_reaches_the_caller() -> None:
    runtime = FailsOnNegatives()
    values = [1.0] * 300 + [-1.0] * 300
    frame = codecs.frame_from_records([{"x": v} for v in values], runtime.signature)
    with override_settings(MODEL_THREADS=2, MODEL_PARALLEL_ROWS=200):
        with pytest.raises(ValueError, match="negative x"):
            parallel.predict(runtime, parallel.split(runtime, frame))
    assert runtime.finished == [300]


def test_below_the_threshold_one_call_on_the_callers_thread() -> None:
    data = load_diabetes(as_frame=True)
    model = RandomForestRegressor(n_estimators=5, random_state=0).fit(data.data, data.target)
    runtime = SklearnRuntime(model, sig.infer(model, data.data.head(20)))
    frame = codecs.frame_from_records(data.data.head(199).to_dict("records"), runtime.signature)
    got, calls = _in_parts(runtime, frame)
    assert calls == [(threading.current_thread().name, 199)]
    _same(got, runtime.predict(frame))
