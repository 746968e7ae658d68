"""Drift for any model, fitted here on data sets scikit-learn ships: a reference by upload
(the API and the admin's form), an input example large enough to serve as one, a
regressor's predictions profiled as numbers, and the input example too small to."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from apps.endpoints.models import DriftReference, MLAlgorithm
from apps.endpoints.monitoring import references, window
from apps.endpoints.tests.apis.test_any_model import dumped, register
from apps.endpoints.tests.factories import operator
from apps.ml.registry import MLRegistry
from apps.ml.tests import models

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_window() -> Any:
    window.reset()
    references.forget()
    yield
    window.reset()


@pytest.fixture
def staff(registry: MLRegistry) -> APIClient:
    client = APIClient()
    client.force_authenticate(operator())
    return client


def csv(frame: pd.DataFrame) -> SimpleUploadedFile:
    return SimpleUploadedFile("reference.csv", frame.to_csv(index=False).encode())


def test_an_uploaded_reference_profiles_inputs_and_the_predicted_labels(staff: APIClient) -> None:
    x, _ = models.wine()
    answer = register(staff, models.wine_classifier(), reference=csv(x))
    assert answer.status_code == 201, answer.content
    assert answer.json()["drift"]["reference"]["rows"] == len(x) == 178
    profile = DriftReference.objects.get().profile
    label = profile["features"][-1]
    assert [f["name"] for f in profile["features"]] == [*x.columns, "label"]
    assert label["kind"] == "categorical"
    assert sorted(label["categories"]) == ["barbera", "barolo", "grignolino"]
    # Predictions from the same distribution: nothing flagged, the window fills.
    for record in x.sample(60, random_state=1).to_dict("records"):
        assert staff.post("/api/v1/wine/predict", record, format="json").status_code == 200
    [version] = staff.get("/api/v1/wine/drift").json()["versions"]
    assert version["window"]["records"] == 60 and version["drifting"] == 0


def test_a_regressors_predictions_are_profiled_as_numbers_and_their_drift_shows(
    staff: APIClient, settings: Any
) -> None:
    settings.DRIFT_MIN_RECORDS = 100
    x, _ = models.diabetes()
    answer = register(staff, models.diabetes_regressor(), endpoint="diabetes", reference=csv(x))
    assert answer.status_code == 201, answer.content
    prediction = DriftReference.objects.get().profile["features"][-1]
    assert (prediction["name"], prediction["kind"]) == ("prediction", "numeric")
    # Larger body-mass index and blood pressure: those inputs, and the predictions, drift.
    shifted = x.assign(bmi=x["bmi"] + 2 * x["bmi"].std(), bp=x["bp"] + 2 * x["bp"].std())
    data = shifted.head(200).to_csv(index=False).encode()
    upload = SimpleUploadedFile("rows.csv", data, content_type="text/csv")
    scored = staff.post(
        "/api/v1/batch-predict", {"file": upload, "endpoint": "diabetes"}, format="multipart"
    )
    assert scored.status_code == 200, scored.content
    [version] = staff.get("/api/v1/diabetes/drift").json()["versions"]
    drifting = set(version["drifting_features"])
    assert {"bmi", "bp", "prediction"} <= drifting
    assert drifting <= {"bmi", "bp", "prediction"}


def test_an_input_example_of_500_rows_serves_as_the_reference_a_small_one_does_not(
    staff: APIClient,
) -> None:
    x, y = models.cancer()
    big = np.tile(np.arange(len(x)), 2)[:520]
    example = x.iloc[big].assign(target=y[big]).to_csv(index=False).encode()
    answer = register(
        staff,
        models.cancer_classifier(),
        endpoint="cancer",
        example=example,
        target_column="target",
    )
    assert answer.status_code == 201, answer.content
    reference = DriftReference.objects.get()
    assert (reference.source, reference.rows) == ("example", 520)
    small = register(
        staff,
        models.cancer_classifier(),
        endpoint="cancer",
        version="2",
        example=models.example_csv(x, y),
        target_column="target",
    )
    assert small.status_code == 201
    assert small.json()["drift"]["reference"] is None
    assert DriftReference.objects.count() == 1


def test_the_admins_form_takes_a_reference_and_the_page_links_the_report(
    client: Client, registry: MLRegistry
) -> None:
    client.force_login(operator())
    x, _ = models.wine()
    done = client.post(
        "/admin/endpoints/mlalgorithm/add/",
        {
            "endpoint_name": "wine",
            "model_name": "lr",
            "model_version": "1",
            "status": "production",
            "artifact_file": dumped(models.wine_classifier(), "m.skops"),
            "reference": csv(x),
        },
    )
    assert done.status_code == 302, done.content.decode()[:2000]
    algorithm = MLAlgorithm.objects.get()
    assert DriftReference.objects.get(algorithm=algorithm).rows == 178
    page = client.get(f"/admin/endpoints/mlalgorithm/{algorithm.pk}/change/").content.decode()
    assert f'href="/mlalgorithms/{algorithm.pk}/drift"' in page
    assert "reference of 178 rows" in page and "Drift references" in page
    refused = client.post(
        "/admin/endpoints/mlalgorithm/add/",
        {
            "endpoint_name": "wine",
            "model_name": "lr",
            "model_version": "2",
            "status": "testing",
            "artifact_file": dumped(models.wine_classifier(), "m.skops"),
            "reference": csv(x.assign(vintage=1990)),
        },
    )
    assert refused.status_code == 200 and "vintage" in refused.content.decode()
    assert MLAlgorithm.objects.count() == 1
