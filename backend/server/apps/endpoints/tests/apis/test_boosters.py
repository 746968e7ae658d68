"""LightGBM and XGBoost models as endpoints (``apps/ml/kinds/lightgbm.py``, ``xgboost.py``):
over HTTP in their libraries' own pickle-free formats, by command from joblib files
(pipelines included), answering as the libraries themselves do, compiled where the
converters reproduce them, and through everything else a version takes part in: batch
files, feedback, A/B tests, the card."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import lightgbm
import numpy as np
import pandas as pd
import pytest
import xgboost
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from rest_framework.test import APIClient
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from apps.endpoints.models import MLAlgorithm, MLRequest
from apps.ml.registry import MLRegistry, set_registry
from apps.ml.tests import models

pytestmark = pytest.mark.django_db

CANCER = ("malignant", "benign")  # breast cancer's targets 0 and 1


@pytest.fixture
def compiling(registry: MLRegistry, settings: Any) -> Iterator[MLRegistry]:
    """Compiled inference on, as in production (the tests' default is off)."""
    settings.ML_COMPILED_INFERENCE = True
    compiled = MLRegistry(registry.artifacts_root, compile=True, trusted=registry.trusted)
    previous = set_registry(compiled)
    try:
        yield compiled
    finally:
        set_registry(previous)


def native(model: Any, suffix: str) -> bytes:
    """The model in its library's own format, as its save_model writes it."""
    path = Path(tempfile.mkdtemp()) / f"model{suffix}"
    try:
        if isinstance(model, lightgbm.LGBMModel):
            model.booster_.save_model(path)
        else:
            model.save_model(path)
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def upload(
    client: APIClient,
    data: bytes,
    file_name: str,
    frame: pd.DataFrame,
    endpoint: str,
    **fields: str,
) -> Any:
    return client.post(
        "/api/v1/mlalgorithms",
        {
            "artifact": SimpleUploadedFile(file_name, data),
            "input_example": SimpleUploadedFile("example.csv", models.example_csv(frame)),
            "endpoint": endpoint,
            "name": fields.pop("name", "booster"),
            "version": fields.pop("version", "1"),
            "status": fields.pop("status", "production"),
            **fields,
        },
    )


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return rows


def as_sent(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows as the service gets them: through JSON (10 significant digits), so the
    library's own answer to compare with is on the same numbers."""
    return pd.DataFrame(records(frame), columns=frame.columns)


def predict(client: APIClient, endpoint: str, record: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/api/v1/{endpoint}/predict", record, format="json")
    assert response.status_code == 200, response.content
    body: dict[str, Any] = response.json()
    return body


def light_classifier() -> Any:
    return lightgbm.LGBMClassifier(n_estimators=25, verbose=-1)


def boosted_classifier() -> Any:
    return xgboost.XGBClassifier(n_estimators=25)


CASES: dict[str, tuple[Callable[[], Any], str]] = {
    "lightgbm text": (light_classifier, ".txt"),
    "xgboost json": (boosted_classifier, ".json"),
    "xgboost ubj": (boosted_classifier, ".ubj"),
}


@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_a_native_classifier_uploads_over_http_and_answers_as_its_library(
    case: str, api: APIClient, staff_api: APIClient, compiling: MLRegistry
) -> None:
    make, suffix = CASES[case]
    x, y = models.cancer()
    model = make().fit(x, y)
    response = upload(staff_api, native(model, suffix), f"m{suffix}", x, "cancer",
                      classes=",".join(CANCER))  # fmt: skip
    assert response.status_code == 201, response.content
    card = response.json()
    assert card["wrapper"] == case.split()[0]
    assert card["artifact"].endswith(suffix)  # read as its format, not unpickled
    assert card["classes"] == list(CANCER)
    # the names clients send are the example's, spaces and all (LightGBM's file says
    # mean_radius)
    assert [f["name"] for f in card["features"]] == list(x.columns)
    assert card["serving"]["engine"] == "onnx", card["serving"]
    rows = x.iloc[::40]
    expected = model.predict_proba(as_sent(rows))
    for record, probabilities in zip(records(rows), expected, strict=True):
        answer = predict(api, "cancer", record)
        assert answer["probability"] == pytest.approx(probabilities[1], abs=1e-5)
        assert answer["label"] == CANCER[int(np.argmax(probabilities))]
    token = answer["feedback_token"]
    given = api.put(
        f"/api/v1/mlrequests/{answer['request_id']}",
        {"feedback": CANCER[0], "feedback_token": token},
        format="json",
    )
    assert given.status_code == 200, given.content


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_native_multiclass_and_regressors_answer_as_their_library_in_a_batch(
    library: str, staff_api: APIClient, compiling: MLRegistry
) -> None:
    wx, wy = models.wine()
    codes = pd.Series(wy).map({"barolo": 0, "grignolino": 1, "barbera": 2}).to_numpy()
    dx, dy = models.diabetes()
    if library == "lightgbm":
        classifier = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(wx, codes)
        regressor = lightgbm.LGBMRegressor(n_estimators=20, verbose=-1).fit(dx, dy)
        suffix = ".txt"
    else:
        classifier = xgboost.XGBClassifier(n_estimators=20).fit(wx, codes)
        regressor = xgboost.XGBRegressor(n_estimators=20).fit(dx, dy)
        suffix = ".json"
    wine = upload(staff_api, native(classifier, suffix), f"w{suffix}", wx, "wine",
                  classes="barolo,grignolino,barbera")  # fmt: skip
    assert wine.status_code == 201, wine.content
    diabetes = upload(staff_api, native(regressor, suffix), f"d{suffix}", dx, "diabetes")
    assert diabetes.status_code == 201, diabetes.content
    assert diabetes.json()["task"] == "regression"
    for endpoint, frame, expected in (
        ("wine", wx, classifier.predict_proba(as_sent(wx))),
        ("diabetes", dx, regressor.predict(as_sent(dx))),
    ):
        csv = as_sent(frame).to_csv(index=False).encode()
        response = staff_api.post(
            "/api/v1/batch-predict",
            {"file": SimpleUploadedFile("f.csv", csv), "endpoint": endpoint},
        )
        assert response.status_code == 200, response.content
        body = json.loads(b"".join(response.streaming_content))  # type: ignore[attr-defined]
        assert body["count"] == len(frame)
        if endpoint == "wine":
            got = [[p["probabilities"][c] for c in ("barolo", "grignolino", "barbera")]
                   for p in body["predictions"]]  # fmt: skip
            assert np.allclose(got, expected, atol=1e-5)
        else:
            got = [p["prediction"] for p in body["predictions"]]
            assert np.allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_a_joblib_pipeline_registers_by_command_and_answers_as_itself(
    library: str, api: APIClient, compiling: MLRegistry, tmp_path: Path
) -> None:
    x, y = models.cancer()
    final = (
        lightgbm.LGBMClassifier(n_estimators=20, verbose=-1)
        if library == "lightgbm"
        else xgboost.XGBClassifier(n_estimators=20)
    )
    model = make_pipeline(StandardScaler(), final).fit(x, y)
    path = tmp_path / "pipeline.joblib"
    joblib.dump(model, path)
    out = io.StringIO()
    call_command("register_model", str(path), "--endpoint", "cancer", "--name", library,
                 "--version", "1", "--status", "production", stdout=out)  # fmt: skip
    algorithm = MLAlgorithm.objects.get(name=library)
    assert algorithm.wrapper == library and algorithm.serving["engine"] == "onnx"
    rows = x.head(5)
    expected = model.predict_proba(as_sent(rows))[:, 1]
    got = [predict(api, "cancer", r)["probability"] for r in records(rows)]
    assert np.allclose(got, expected, atol=1e-5)


def test_a_booster_the_converter_cannot_reproduce_is_served_by_its_library(
    api: APIClient, staff_api: APIClient, compiling: MLRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxmltools

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no converter today")

    monkeypatch.setattr(onnxmltools, "convert_lightgbm", broken)
    x, y = models.cancer()
    model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(x, y)
    card = upload(staff_api, native(model, ".txt"), "m.txt", x, "cancer").json()
    assert card["serving"]["engine"] == "lightgbm"
    assert "no converter today" in card["serving"]["reason"]
    assert card["classes"] == ["0", "1"]  # the form named none
    answer = predict(api, "cancer", records(x.head(1))[0])
    expected = model.predict_proba(as_sent(x.head(1)))
    assert answer["probability"] == pytest.approx(float(expected[0][1]), abs=1e-12)


def test_an_ab_test_between_a_lightgbm_and_an_xgboost_version(
    api: APIClient, staff_api: APIClient, compiling: MLRegistry
) -> None:
    x, y = models.cancer()
    light = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(x, y)
    boost = xgboost.XGBClassifier(n_estimators=20).fit(x, y)
    first = upload(staff_api, native(light, ".txt"), "l.txt", x, "cancer",
                   classes=",".join(CANCER), name="lightgbm").json()  # fmt: skip
    second = upload(staff_api, native(boost, ".json"), "x.json", x, "cancer",
                    classes=",".join(CANCER), name="xgboost", status="testing").json()  # fmt: skip
    started = staff_api.post(
        "/api/v1/abtests",
        {
            "title": "trees",
            "parent_mlalgorithm_1": first["id"],
            "parent_mlalgorithm_2": second["id"],
        },
        format="json",
    )
    assert started.status_code == 201, started.content
    served = set()
    for i, record in enumerate(records(x.head(40))):
        response = api.post("/api/v1/cancer/predict?status=ab_testing", record, format="json")
        answer = response.json()
        served.add(answer["algorithm"]["name"])
        api.put(
            f"/api/v1/mlrequests/{answer['request_id']}",
            {"feedback": CANCER[int(y[i])], "feedback_token": answer["feedback_token"]},
            format="json",
        )
    assert served == {"lightgbm", "xgboost"}
    stopped = staff_api.post(f"/api/v1/stop_ab_test/{started.json()['id']}", {}, format="json")
    assert stopped.status_code == 200, stopped.content
    assert MLRequest.objects.filter(ab_test_id=started.json()["id"]).count() == 40


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"classes": "a,b,c"}, "has 2 classes; the form named 3"),
        ({"classes": "a,a"}, "not distinct"),
    ],
)
def test_classes_that_do_not_fit_the_file_are_a_400(
    staff_api: APIClient, registry: MLRegistry, fields: dict[str, str], message: str
) -> None:
    x, y = models.cancer()
    model = xgboost.XGBClassifier(n_estimators=5).fit(x, y)
    response = upload(staff_api, native(model, ".json"), "m.json", x, "cancer", **fields)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert MLAlgorithm.objects.count() == 0


def test_an_example_that_is_not_the_files_features_is_a_400(
    staff_api: APIClient, registry: MLRegistry
) -> None:
    x, y = models.cancer()
    model = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(x, y)
    shuffled = x[list(reversed(x.columns))]
    response = upload(staff_api, native(model, ".txt"), "m.txt", shuffled, "cancer")
    assert response.status_code == 400
    assert "not the model's features in its order" in response.json()["error"]["message"]
    fewer = upload(staff_api, native(model, ".txt"), "m.txt", x.iloc[:, :5], "cancer")
    assert "has 5 columns; the model takes 30" in fewer.json()["error"]["message"]


def test_a_pickled_booster_is_refused_over_http_as_any_pickle(
    staff_api: APIClient, registry: MLRegistry
) -> None:
    x, y = models.cancer()
    buffer = io.BytesIO()
    joblib.dump(lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(x, y), buffer)
    response = staff_api.post(
        "/api/v1/mlalgorithms",
        {
            "artifact": SimpleUploadedFile("m.joblib", buffer.getvalue()),
            "endpoint": "cancer",
            "name": "x",
            "version": "1",
        },
    )
    assert response.status_code == 400
    assert "ALLOW_PICKLE_UPLOADS" in response.json()["error"]["message"]
