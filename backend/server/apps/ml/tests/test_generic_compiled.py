"""The compiled (ONNX) path for any model: used only where it reproduces scikit-learn, and
a model that does not convert is served as it is."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from apps.ml import artifacts, codecs, compiled, intake
from apps.ml.answer import ModelOutput
from apps.ml.compiled import OnnxRuntime
from apps.ml.kinds.sklearn import SklearnRuntime
from apps.ml.tests import models


def inspected(model: Any, folder: Path, name: str, example: bytes | None = None) -> intake.Intake:
    path = models.save(model, folder, name)
    return intake.inspect(
        path,
        sha256=artifacts.sha256_of(path),
        trusted=(),
        allow_pickle=True,
        example=example,
        compile=True,
    )


def onnx_runtime(found: intake.Intake) -> OnnxRuntime:
    """The ONNX form the intake verified, loaded as a worker loads it."""
    card = dict(found.serving)
    onnx_bytes = card.pop("onnx_bytes")
    return OnnxRuntime(
        compiled._session(onnx_bytes), found.signature, layout=card["layout"], dtype=card["dtype"]
    )


def test_a_scaled_logistic_regression_is_served_by_onnx_with_sklearns_answers(
    tmp_path: Path,
) -> None:
    x, y = models.wine()
    model = models.wine_classifier()
    found = inspected(model, tmp_path, "wine.skops", models.example_csv(x, y))
    assert found.serving["engine"] == "onnx", found.serving["reason"]
    assert "reproduced scikit-learn" in found.serving["reason"]
    onnx = onnx_runtime(found)
    frame = codecs.frame_from_records(x.to_dict(orient="records"), found.signature)
    got = onnx.predict(frame)
    assert got.labels is not None and got.probabilities is not None
    assert got.labels.tolist() == model.predict(x).tolist()
    assert np.max(np.abs(got.probabilities - model.predict_proba(x))) <= 1e-5


def test_a_regressor_is_served_by_onnx_within_1e5_relative(tmp_path: Path) -> None:
    x, _ = models.diabetes()
    model = models.diabetes_regressor()
    found = inspected(model, tmp_path, "diabetes.joblib", models.example_csv(x))
    assert found.serving["engine"] == "onnx", found.serving["reason"]
    frame = codecs.frame_from_records(x.to_dict(orient="records"), found.signature)
    values = onnx_runtime(found).predict(frame).values
    assert values is not None
    np.testing.assert_allclose(values, model.predict(x), rtol=1e-5)


def test_a_column_transformer_with_text_categories_converts_per_column(tmp_path: Path) -> None:
    frame, y = models.mixed_frame()
    model = models.mixed_classifier()
    found = inspected(model, tmp_path, "mixed.joblib", models.example_csv(frame, y, rows=60))
    assert found.serving["engine"] == "onnx", found.serving["reason"]
    assert found.serving["layout"] == "columns"  # one input per feature, text ones as strings
    records = json.loads(frame.to_json(orient="records"))  # gaps as null, as a client sends
    checked = codecs.frame_from_records(records, found.signature)
    got = onnx_runtime(found).predict(checked)
    assert got.labels is not None
    assert got.labels.tolist() == model.predict(frame).tolist()


def test_float32_inputs_that_lose_precision_give_way_to_float64(tmp_path: Path) -> None:
    x, y = models.wine()
    model = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(50,), max_iter=2000, random_state=0)
    ).fit(x, y)
    found = inspected(model, tmp_path, "mlp.joblib", models.example_csv(x, y))
    assert found.serving["engine"] == "onnx", found.serving["reason"]
    assert found.serving["dtype"] in ("float32", "float64")


@pytest.mark.parametrize(
    "model",
    [
        make_pipeline(FunctionTransformer(np.log1p), HistGradientBoostingClassifier(max_iter=20)),
        make_pipeline(StandardScaler(), HistGradientBoostingClassifier(max_iter=20)),
    ],
    ids=["function transformer", "histogram boosting"],
)
# The rows generated to check a compiled form hold negative numbers, which the first
# model's own log1p makes NaN (and numpy says so): its answer, not the service's.
@pytest.mark.filterwarnings("ignore:invalid value encountered in log1p:RuntimeWarning")
def test_a_model_skl2onnx_cannot_convert_is_served_by_sklearn_and_says_why(
    tmp_path: Path, model: Any
) -> None:
    x, y = models.wine()
    model.fit(x, y)
    found = inspected(model, tmp_path, "unconvertible.joblib", models.example_csv(x, y))
    assert found.serving["engine"] == "sklearn"
    assert found.serving["reason"].startswith("not compiled: ")
    assert "float32" in found.serving["reason"]
    assert isinstance(found.runtime, SklearnRuntime)


def test_a_converter_that_fails_never_stops_a_registration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> bytes:
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(compiled, "_convert", broken)
    with caplog.at_level(logging.WARNING):
        found = inspected(models.wine_classifier(), tmp_path, "wine.skops")
    assert found.serving["engine"] == "sklearn"
    assert "converter exploded" in found.serving["reason"]


def test_a_form_that_disagrees_is_refused() -> None:
    x, _ = models.wine()
    model = models.wine_classifier()
    from apps.ml import signature

    sig = signature.infer(model, x.head(3))
    frame = codecs.frame_from_records(x.head(20).to_dict(orient="records"), sig)
    expected = SklearnRuntime(model, sig).predict(frame)
    assert expected.probabilities is not None and expected.labels is not None
    shifted = ModelOutput(labels=expected.labels, probabilities=expected.probabilities + 1e-4)
    assert "probabilities differ" in (compiled.generic_disagreement(sig, expected, shifted) or "")
    flipped = ModelOutput(
        labels=np.array(["barbera"] * 20, dtype=object), probabilities=expected.probabilities
    )
    assert "labels differ" in (compiled.generic_disagreement(sig, expected, flipped) or "")
    assert compiled.generic_disagreement(sig, expected, expected) is None


def test_probabilities_from_float32_trees_stay_within_0_and_1(tmp_path: Path) -> None:
    """ONNX Runtime sums a forest's votes in float32: a sure class came out as
    1.0000001192092896, a probability no client should see (found by registering an iris
    forest over HTTP)."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    data = load_iris(as_frame=True)
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(data.data, data.target)
    example = data.data.head(5).assign(species=data.target.head(5)).to_csv(index=False).encode()
    found = inspected(model, tmp_path, "iris.joblib", example)
    assert found.serving["engine"] == "onnx", found.serving["reason"]
    frame = codecs.frame_from_records(data.data.to_dict(orient="records"), found.signature)
    got = onnx_runtime(found).predict(frame)
    assert got.probabilities is not None
    assert got.probabilities.max() <= 1.0 and got.probabilities.min() >= 0.0
    assert np.max(np.abs(got.probabilities - model.predict_proba(data.data))) <= 1e-5
