"""Batch files for any endpoint: columns from the model's signature, answers equal to
scikit-learn's, the target column as feedback with the task's metrics."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from apps.endpoints.catalogue.register import register_model
from apps.endpoints.models import MLRequest
from apps.endpoints.serving import feedback
from apps.ml.registry import MLRegistry
from apps.ml.tests import models

pytestmark = pytest.mark.django_db


def registered(model: Any, endpoint: str, target_column: str = "target") -> None:
    buffer = io.BytesIO()
    import skops.io

    skops.io.dump(model, buffer)
    buffer.seek(0)
    register_model(
        artifact=buffer,
        file_name="model.skops",
        endpoint_name=endpoint,
        name="m",
        version="1",
        status="production",
        target_column=target_column,
    )


def upload(api: APIClient, text: str, endpoint: str, **headers: Any) -> Any:
    file = SimpleUploadedFile("rows.csv", text.encode())
    return api.post("/api/v1/batch-predict", {"file": file, "endpoint": endpoint}, **headers)


def body_of(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.content
    content: dict[str, Any] = json.loads(b"".join(response.streaming_content))
    return content


def test_a_multiclass_file_answers_labels_and_probabilities_and_its_accuracy(
    api: APIClient, registry: MLRegistry, settings: Any
) -> None:
    settings.BATCH_CHUNK_ROWS = 50  # 178 rows: four chunks
    x, y = models.wine()
    model = models.wine_classifier()
    registered(model, "wine")
    text = x.assign(target=y, note="ignored").to_csv(index=False)
    body = body_of(upload(api, text, "wine"))
    assert body["count"] == len(x) and body["ignored_columns"] == ["note"]
    assert body["label_column"] == "target" and body["labelled"] == len(x)
    assert body["accuracy"] == pytest.approx(float(np.mean(model.predict(x) == y)))
    assert body["metrics"] == {}
    labels = [p["label"] for p in body["predictions"]]
    assert labels == model.predict(x).tolist()
    got = np.array([[p["probabilities"][c] for c in model.classes_] for p in body["predictions"]])
    np.testing.assert_allclose(got, model.predict_proba(x), atol=1e-12)
    first = MLRequest.objects.get(pk=body["predictions"][0]["request_id"])
    assert first.feedback == y[0] and first.feedback_via == "upload"
    assert first.full_response["probabilities"] == body["predictions"][0]["probabilities"]
    assert first.input_data["alcohol"] == str(x.iloc[0]["alcohol"])


def test_a_multiclass_csv_answer_has_a_column_per_class(
    api: APIClient, registry: MLRegistry
) -> None:
    x, _ = models.wine()
    model = models.wine_classifier()
    registered(model, "wine")
    response = upload(api, x.head(5).to_csv(index=False), "wine", HTTP_ACCEPT="text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][-6:] == [
        "request_id", "label", "probability_barbera", "probability_barolo",
        "probability_grignolino", "feedback_token",
    ]  # fmt: skip
    assert [r[-5] for r in rows[1:]] == model.predict(x.head(5)).tolist()
    assert rows[1][-1] == feedback.token_for(int(rows[1][-6]))


def test_a_regression_file_answers_numbers_and_mae_rmse_and_r2(
    api: APIClient, registry: MLRegistry
) -> None:
    x, y = models.diabetes()
    model = models.diabetes_regressor()
    registered(model, "diabetes", target_column="progression")
    text = x.assign(progression=y).to_csv(index=False)
    body = body_of(upload(api, text, "diabetes"))
    predicted = model.predict(x)
    got = np.array([p["prediction"] for p in body["predictions"]])
    np.testing.assert_allclose(got, predicted, rtol=1e-12)
    errors = predicted - y
    assert body["accuracy"] is None and body["labelled"] == len(y)
    assert body["metrics"]["mae"] == pytest.approx(np.mean(np.abs(errors)))
    assert body["metrics"]["rmse"] == pytest.approx(np.sqrt(np.mean(errors**2)))
    r2 = 1 - np.sum(errors**2) / np.sum((y - y.mean()) ** 2)
    assert body["metrics"]["r2"] == pytest.approx(r2)
    row = MLRequest.objects.get(pk=body["predictions"][0]["request_id"])
    assert float(row.feedback or "nan") == y[0] and float(row.response) == pytest.approx(got[0])
    csv_answer = upload(api, x.head(2).to_csv(index=False), "diabetes", HTTP_ACCEPT="text/csv")
    header = b"".join(csv_answer.streaming_content).decode().splitlines()[0].split(",")
    assert header[-3:] == ["request_id", "prediction", "feedback_token"]


def test_a_bad_target_value_names_its_line_and_writes_nothing(
    api: APIClient, registry: MLRegistry
) -> None:
    x, y = models.diabetes()
    registered(models.diabetes_regressor(), "diabetes", target_column="progression")
    values = [str(v) for v in y[:5]]
    values[3] = "a lot"
    text = x.head(5).assign(progression=values).to_csv(index=False)
    response = upload(api, text, "diabetes")
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("Line 5, column 'progression': 'a lot' is not a finite number")
    assert MLRequest.objects.count() == 0


def test_a_missing_feature_column_is_named(api: APIClient, registry: MLRegistry) -> None:
    x, _ = models.wine()
    registered(models.wine_classifier(), "wine")
    response = upload(api, x.drop(columns=["proline"]).head(3).to_csv(index=False), "wine")
    assert response.status_code == 400
    assert response.json()["error"]["details"]["missing_columns"] == ["proline"]
