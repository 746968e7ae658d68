"""Any scikit-learn model as an endpoint, over HTTP: the upload, its refusals, the answers
of each task (equal to scikit-learn's own), bad values, feedback, and the admin's form."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from apps.endpoints.models import MLAlgorithm, MLRequest
from apps.endpoints.tests.factories import operator
from apps.ml.registry import MLRegistry
from apps.ml.tests import models

pytestmark = pytest.mark.django_db


def dumped(model: Any, name: str) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    if name.endswith(".skops"):
        skops.io.dump(model, buffer)
    else:
        joblib.dump(model, buffer)
    return SimpleUploadedFile(name, buffer.getvalue())


def register(
    client: APIClient,
    model: Any,
    name: str = "model.skops",
    *,
    example: bytes | None = None,
    **fields: str | SimpleUploadedFile,
) -> Any:
    data: dict[str, Any] = {
        "artifact": dumped(model, name),
        "endpoint": "wine",
        "name": "lr",
        "version": "1",
        "status": "production",
        **fields,
    }
    if example is not None:
        data["input_example"] = SimpleUploadedFile("example.csv", example)
    return client.post("/api/v1/mlalgorithms", data)


def predict(client: APIClient, endpoint: str, record: dict[str, Any]) -> Any:
    return client.post(f"/api/v1/{endpoint}/predict", record, format="json")


def records(frame: Any) -> list[dict[str, Any]]:
    """Rows as a client sends them: JSON, gaps as null."""
    rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return rows


def leftover_files(artifacts_dir: Path) -> list[Path]:
    return [p for p in artifacts_dir.rglob("*") if p.is_file() and "uploads" in p.parts]


# -- registering -------------------------------------------------------------------------


def test_an_upload_answers_201_with_its_card_and_serves_at_once(
    api: APIClient, staff_api: APIClient, registry: MLRegistry
) -> None:
    x, y = models.wine()
    model = models.wine_classifier()
    response = register(staff_api, model, example=models.example_csv(x, y), target_column="target")
    assert response.status_code == 201, response.content
    card = response.json()
    assert card["current_status"] == "production" and card["owner"] == "operator"
    assert card["task"] == "classification"
    assert card["classes"] == ["barbera", "barolo", "grignolino"]
    assert card["outputs"] == ["label", "probabilities", "status"]
    assert [f["name"] for f in card["features"]] == list(x.columns)
    assert card["example"][0] == records(x.head(1))[0]
    assert card["serving"]["engine"] == "sklearn"  # compiled inference is off in the tests
    assert card["target_column"] == "target" and card["notes"] == []
    assert card["artifact"] == f"uploads/{card['artifact_sha256']}.skops"
    answer = predict(api, "wine", records(x.head(1))[0]).json()
    assert answer["label"] == model.predict(x.head(1))[0]


def test_answers_equal_scikit_learns_own_for_each_task(
    api: APIClient, staff_api: APIClient, registry: MLRegistry
) -> None:
    x, _ = models.wine()
    wine = models.wine_classifier()
    assert register(staff_api, wine).status_code == 201
    for i, record in enumerate(records(x.iloc[::17])):
        answer = predict(api, "wine", record).json()
        row = x.iloc[::17].iloc[[i]]
        assert answer["label"] == wine.predict(row)[0]
        expected = dict(zip(wine.classes_, wine.predict_proba(row)[0], strict=True))
        assert answer["probabilities"] == pytest.approx(expected, abs=1e-12)
        assert "probability" not in answer  # three classes: no single positive class
    cx, _ = models.cancer()
    cancer = models.cancer_classifier()
    assert register(staff_api, cancer, endpoint="cancer").status_code == 201
    answer = predict(api, "cancer", records(cx.head(1))[0]).json()
    assert answer["probability"] == pytest.approx(cancer.predict_proba(cx.head(1))[0, 1])
    assert answer["label"] == str(cancer.predict(cx.head(1))[0])
    dx, _ = models.diabetes()
    diabetes = models.diabetes_regressor()
    assert register(staff_api, diabetes, endpoint="diabetes").status_code == 201
    answer = predict(api, "diabetes", records(dx.head(1))[0]).json()
    assert answer["prediction"] == pytest.approx(diabetes.predict(dx.head(1))[0], rel=1e-12)
    assert "label" not in answer and answer["status"] == "OK"
    assert MLRequest.objects.get(pk=answer["request_id"]).response == repr(answer["prediction"])


def test_a_classifier_without_predict_proba_answers_a_label_only(
    api: APIClient, staff_api: APIClient, registry: MLRegistry
) -> None:
    x, y = models.cancer()
    model = make_pipeline(StandardScaler(), LinearSVC()).fit(x, y)
    assert register(staff_api, model, endpoint="svm").status_code == 201
    answer = predict(api, "svm", records(x.head(1))[0]).json()
    assert set(answer) == {"label", "status", "request_id", "feedback_token", "algorithm"}


def test_a_pickle_upload_is_refused_unless_the_operator_allows_it(
    staff_api: APIClient, registry: MLRegistry, artifacts_dir: Path, settings: Any
) -> None:
    response = register(staff_api, models.wine_classifier(), "model.joblib")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "model_rejected" and "ALLOW_PICKLE_UPLOADS" in error["message"]
    assert MLAlgorithm.objects.count() == 0 and leftover_files(artifacts_dir) == []
    settings.ALLOW_PICKLE_UPLOADS = True
    assert register(staff_api, models.wine_classifier(), "model.joblib").status_code == 201


def test_a_skops_file_with_an_untrusted_type_answers_400_listing_it(
    staff_api: APIClient, registry: MLRegistry, artifacts_dir: Path, settings: Any
) -> None:
    settings.SKOPS_TRUSTED_TYPES = ()  # nothing beyond skops' own defaults
    response = register(staff_api, models.mixed_classifier(), "forest.skops")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "untrusted_types"
    assert set(error["details"]["untrusted_types"]) == {"numpy.dtype", "sklearn.tree._tree.Tree"}
    assert MLAlgorithm.objects.count() == 0 and leftover_files(artifacts_dir) == []


def test_a_model_that_fails_on_its_example_answers_400_and_leaves_nothing(
    staff_api: APIClient, registry: MLRegistry, artifacts_dir: Path, settings: Any
) -> None:
    x, _ = models.wine()
    bad = x.head(3).copy()
    bad["alcohol"] = 150.0  # valid numbers, that the pipeline's own check refuses
    settings.ALLOW_PICKLE_UPLOADS = True  # the test's own transformer is a pickled class
    response = register(
        staff_api,
        models.picky_classifier(),
        "picky.joblib",
        example=bad.to_csv(index=False).encode(),
    )
    assert response.status_code == 400
    assert "does not predict on input example" in response.json()["error"]["message"]
    assert "alcohol over 100" in response.json()["error"]["message"]
    assert MLAlgorithm.objects.count() == 0 and leftover_files(artifacts_dir) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a zip file at all", "not a readable .skops file"),
        (b"", "empty"),
    ],
    ids=["garbage", "empty"],
)
def test_a_file_that_is_not_a_model_answers_400(
    staff_api: APIClient, registry: MLRegistry, artifacts_dir: Path, data: bytes, message: str
) -> None:
    response = staff_api.post(
        "/api/v1/mlalgorithms",
        {
            "artifact": SimpleUploadedFile("m.skops", data),
            "endpoint": "wine",
            "name": "x",
            "version": "1",
        },
    )
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]["message"]
    assert leftover_files(artifacts_dir) == []


def test_a_duplicate_version_is_a_409_and_keeps_the_first(
    staff_api: APIClient, registry: MLRegistry
) -> None:
    assert register(staff_api, models.wine_classifier()).status_code == 201
    again = register(staff_api, models.cancer_classifier())
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert MLAlgorithm.objects.get().classes == ["barbera", "barolo", "grignolino"]


def test_uploading_needs_an_operator_allowed_to_add_algorithms(
    api: APIClient, registry: MLRegistry, django_user_model: Any
) -> None:
    assert register(api, models.wine_classifier()).status_code == 401
    user = APIClient()
    user.force_authenticate(django_user_model.objects.create_user("u"))
    assert register(user, models.wine_classifier()).status_code == 403
    staff = APIClient()
    staff.force_authenticate(operator("viewer", permissions=["view_mlalgorithm"]))
    refused = register(staff, models.wine_classifier())
    assert refused.status_code == 403 and "add_mlalgorithm" in refused.json()["error"]["message"]
    allowed = APIClient()
    allowed.force_authenticate(operator("adder", permissions=["add_mlalgorithm"]))
    assert register(allowed, models.wine_classifier()).status_code == 201


def test_an_upload_past_the_limit_is_a_413(
    staff_api: APIClient, registry: MLRegistry, settings: Any, artifacts_dir: Path
) -> None:
    settings.MODEL_MAX_UPLOAD_BYTES = 1000
    response = register(staff_api, models.wine_classifier())
    assert response.status_code == 413
    assert "MODEL_MAX_UPLOAD_BYTES" in response.json()["error"]["message"]
    assert leftover_files(artifacts_dir) == []


def test_a_skops_file_that_unpacks_past_the_limit_is_a_413_before_skops_reads_it(
    staff_api: APIClient,
    registry: MLRegistry,
    settings: Any,
    artifacts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.MODEL_MAX_UNPACKED_BYTES = 1024 * 1024
    bomb = models.skops_bomb(models.wine_classifier(), 8 * 1024 * 1024)
    assert len(bomb) < 64 * 1024  # far under the upload limit: only its contents are large
    opened: list[str] = []
    for name in ("get_untrusted_types", "loads"):
        real = getattr(skops.io, name)
        monkeypatch.setattr(skops.io, name, spy(real, opened))
    response = staff_api.post(
        "/api/v1/mlalgorithms",
        {
            "artifact": SimpleUploadedFile("bomb.skops", bomb),
            "endpoint": "wine",
            "name": "lr",
            "version": "1",
        },
    )
    assert response.status_code == 413, response.content
    error = response.json()["error"]
    assert error["code"] == "too_large" and "MODEL_MAX_UNPACKED_BYTES" in error["message"]
    assert error["details"]["unpacked_bytes"] > 8 * 1024 * 1024
    assert opened == [], "skops read the file: the memory was spent before the refusal"
    assert MLAlgorithm.objects.count() == 0 and leftover_files(artifacts_dir) == []


def spy(function: Any, calls: list[str]) -> Any:
    def called(*args: Any, **kwargs: Any) -> Any:
        calls.append(function.__name__)
        return function(*args, **kwargs)

    return called


def test_the_browsable_api_offers_the_upload_form(
    staff_api: APIClient, registry: MLRegistry
) -> None:
    page = staff_api.get("/api/v1/mlalgorithms", HTTP_ACCEPT="text/html").content.decode()
    assert 'type="file"' in page and 'name="artifact"' in page and 'name="input_example"' in page


# -- bad values, for any model -----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"alcohol": "strong"}, "alcohol", "A number is required, got 'strong'."),
        ({"alcohol": [13.0]}, "alcohol", "A number is required, got list."),
        ({"alcohol": {"v": 1}}, "alcohol", "A number is required, got dict."),
        ({"alcohol": "NaN"}, "alcohol", "A finite number is required."),
        ({"alcohol": "-Infinity"}, "alcohol", "A finite number is required."),
        ({"colour": "blue"}, "colour", "'blue' is not a valid colour. Valid: red, rose, white."),
        ({"colour": None}, "colour", "This feature is required."),
        ({"organic": "perhaps"}, "organic", "true or false is required"),
        ({"vintage": 1998}, "vintage", "Unknown feature."),
    ],
)
def test_a_bad_value_answers_400_naming_the_field(
    api: APIClient,
    staff_api: APIClient,
    registry: MLRegistry,
    change: dict[str, Any],
    field: str,
    message: str,
) -> None:
    frame, y = models.mixed_frame()
    example = models.example_csv(frame, y, rows=30)
    assert register(staff_api, models.mixed_classifier(), example=example).status_code == 201
    record = {**records(frame.head(1))[0], **change}
    response = predict(api, "wine", record)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["details"][field][0].startswith(message)
    assert MLRequest.objects.count() == 0


def test_an_optional_feature_may_be_missing_and_a_required_one_may_not(
    api: APIClient, staff_api: APIClient, registry: MLRegistry
) -> None:
    frame, y = models.mixed_frame()
    model = models.mixed_classifier()
    register(staff_api, model, example=models.example_csv(frame, y, rows=30))
    record = records(frame.head(1))[0]
    del record["hue"]  # the example has gaps in hue
    answer = predict(api, "wine", record)
    assert answer.status_code == 200, answer.content
    expected = model.predict(frame.head(1).assign(hue=np.nan))[0]
    assert answer.json()["label"] == expected
    del record["alcohol"]
    assert predict(api, "wine", record).json()["error"]["details"]["alcohol"] == [
        "This feature is required."
    ]


def test_an_error_of_the_model_itself_is_a_400_with_its_message_never_a_500(
    api: APIClient, staff_api: APIClient, registry: MLRegistry, settings: Any
) -> None:
    settings.ALLOW_PICKLE_UPLOADS = True  # the test's own transformer is a pickled class
    x, _ = models.wine()
    # Its first step does not record the columns it was fitted on: the example names them.
    registered = register(
        staff_api, models.picky_classifier(), "picky.joblib", example=models.example_csv(x)
    )
    assert registered.status_code == 201, registered.content
    record = {**records(x.head(1))[0], "alcohol": 150.0}
    response = predict(api, "wine", record)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert "ValueError: alcohol over 100 % is not a wine" in error["message"]
    assert "Traceback" not in response.content.decode()
    assert MLRequest.objects.count() == 0


# -- feedback ----------------------------------------------------------------------------


def test_a_regressor_takes_a_finite_number_as_feedback(
    api: APIClient, staff_api: APIClient, registry: MLRegistry
) -> None:
    x, _ = models.diabetes()
    register(staff_api, models.diabetes_regressor(), endpoint="diabetes")
    served = predict(api, "diabetes", records(x.head(1))[0]).json()
    url = f"/api/v1/mlrequests/{served['request_id']}"
    token = served["feedback_token"]
    bad = api.put(url, {"feedback": "high", "feedback_token": token}, format="json")
    assert bad.status_code == 400 and "finite number" in bad.json()["error"]["message"]
    good = api.put(url, {"feedback": " 151 ", "feedback_token": token}, format="json")
    assert good.status_code == 200 and good.json()["feedback"] == "151.0"


def test_a_classifier_takes_one_of_its_classes_as_feedback(
    api: APIClient, staff_api: APIClient, registry: MLRegistry
) -> None:
    x, _ = models.wine()
    register(staff_api, models.wine_classifier())
    served = predict(api, "wine", records(x.head(1))[0]).json()
    url = f"/api/v1/mlrequests/{served['request_id']}"
    body = {"feedback": ">50K", "feedback_token": served["feedback_token"]}
    refused = api.put(url, body, format="json")
    assert refused.status_code == 400
    assert "expected one of: barbera, barolo, grignolino" in refused.json()["error"]["message"]
    body["feedback"] = "barolo"
    assert api.put(url, body, format="json").status_code == 200


# -- the admin's upload form -------------------------------------------------------------


def test_the_admin_registers_an_uploaded_model_and_shows_refusals_on_the_form(
    client: Client, registry: MLRegistry, artifacts_dir: Path
) -> None:
    client.force_login(operator())
    form = client.get("/admin/endpoints/mlalgorithm/add/").content.decode()
    assert 'type="file"' in form and "artifact_file" in form
    x, y = models.wine()
    fields = {
        "endpoint_name": "wine",
        "model_name": "lr",
        "model_version": "1",
        "status": "staging",
        "target_column_name": "target",
        "model_description": "from the admin",
    }
    refused = client.post(
        "/admin/endpoints/mlalgorithm/add/",
        {**fields, "artifact_file": dumped(models.wine_classifier(), "m.joblib")},
    )
    assert refused.status_code == 200 and "ALLOW_PICKLE_UPLOADS" in refused.content.decode()
    assert MLAlgorithm.objects.count() == 0 and leftover_files(artifacts_dir) == []
    done = client.post(
        "/admin/endpoints/mlalgorithm/add/",
        {
            **fields,
            "artifact_file": dumped(models.wine_classifier(), "m.skops"),
            "input_example": SimpleUploadedFile("e.csv", models.example_csv(x, y)),
        },
    )
    assert done.status_code == 302, done.content.decode()[:3000]
    algorithm = MLAlgorithm.objects.get()
    assert (algorithm.name, algorithm.version, algorithm.owner) == ("lr", "1", "operator")
    assert algorithm.description == "from the admin" and algorithm.target_column == "target"
    assert algorithm.statuses.get(active=True).status == "staging"
    page = client.get(f"/admin/endpoints/mlalgorithm/{algorithm.pk}/change/").content.decode()
    assert "alcohol (number)" in page and "Served by" in page


def test_the_admin_form_refuses_a_file_past_the_upload_limit(
    client: Client, registry: MLRegistry, artifacts_dir: Path, settings: Any
) -> None:
    """Regression: the admin's form took a model file of any size (only the API checked
    MODEL_MAX_UPLOAD_BYTES)."""
    client.force_login(operator())
    upload = dumped(models.wine_classifier(), "m.skops")
    settings.MODEL_MAX_UPLOAD_BYTES = len(upload.read()) - 1
    upload.seek(0)
    refused = client.post(
        "/admin/endpoints/mlalgorithm/add/",
        {
            "endpoint_name": "wine",
            "model_name": "lr",
            "model_version": "1",
            "status": "staging",
            "artifact_file": upload,
        },
    )
    assert refused.status_code == 200
    assert "MODEL_MAX_UPLOAD_BYTES" in refused.content.decode()
    assert MLAlgorithm.objects.count() == 0 and leftover_files(artifacts_dir) == []


def test_an_input_example_past_its_limit_is_a_413(
    staff_api: APIClient, registry: MLRegistry, artifacts_dir: Path
) -> None:
    """Regression: the input example was read whole into memory, up to the model's limit."""
    from apps.endpoints.catalogue import register as catalogue

    x, y = models.wine()
    big = models.example_csv(x, y) * (catalogue.MAX_EXAMPLE_BYTES // 1000)
    assert len(big) > catalogue.MAX_EXAMPLE_BYTES
    response = register(staff_api, models.wine_classifier(), example=big)
    assert response.status_code == 413, response.content
    assert "input example" in response.json()["error"]["message"]
    assert MLAlgorithm.objects.count() == 0 and leftover_files(artifacts_dir) == []
