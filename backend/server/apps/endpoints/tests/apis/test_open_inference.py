"""The Open Inference Protocol (V2) with its own client, tritonclient's HTTP client, against a
live server: health, metadata, readiness and infer for the Adult forest (strings and numbers
mixed), a multiclass classifier and a regressor, 1,000 rows in one request; the answers
equal our own API's; errors in the protocol's shape; a V2 prediction is logged and takes
feedback like any other."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from rest_framework.test import APIClient
from tritonclient.utils import InferenceServerException

from adult import load_split  # research/adult.py
from apps.endpoints.models import MLRequest
from apps.ml.registry import MLRegistry
from apps.ml.tests import models

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(live_server: Any, all_demos: MLRegistry) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=live_server.url.removeprefix("http://"))


@pytest.fixture(scope="module")
def adult_rows() -> pd.DataFrame:
    return load_split("adult.test").head(1000)


def tensors(
    client: triton.InferenceServerClient, model: str, frame: pd.DataFrame
) -> list[triton.InferInput]:
    """One JSON tensor per input the model's metadata names, from ``frame``'s columns."""
    inputs = []
    for spec in client.get_model_metadata(model)["inputs"]:
        column = frame[spec["name"]]
        if spec["datatype"] == "BYTES":
            values = np.array(["" if v != v else str(v) for v in column], dtype=object)
        else:
            values = column.to_numpy(dtype=np.float64)
        tensor = triton.InferInput(spec["name"], [len(frame)], spec["datatype"])
        tensor.set_data_from_numpy(values, binary_data=False)
        inputs.append(tensor)
    return inputs


def outputs(*names: str) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name, binary_data=False) for name in names]


def batch_answers(api: APIClient, endpoint: str, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Our own API's answers to the same rows (batch-predict, JSON)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("rows.csv", frame.to_csv(index=False).encode())
    response = api.post(
        "/api/v1/batch-predict", {"file": upload, "endpoint": endpoint}, format="multipart"
    )
    assert response.status_code == 200, response.content
    content = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    rows: list[dict[str, Any]] = json.loads(content)["predictions"]
    return rows


def test_health_and_metadata_as_the_protocol_defines_them(
    client: triton.InferenceServerClient,
) -> None:
    assert client.is_server_live() and client.is_server_ready()
    server = client.get_server_metadata()
    assert server["name"] == "ml_pipeline" and "model_configuration" in server["extensions"]
    assert client.is_model_ready("income_classifier")
    assert client.is_model_ready("income_classifier", "0.0.1")
    forest = client.get_model_metadata("income_classifier")
    assert forest["name"] == "income_classifier" and forest["versions"] == ["0.0.1"]
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in forest["inputs"]}
    assert inputs["age"] == ("FP64", [-1]) and inputs["workclass"] == ("BYTES", [-1])
    assert len(inputs) == 14
    assert [(t["name"], t["datatype"], t["shape"]) for t in forest["outputs"]] == [
        ("label", "BYTES", [-1]),
        ("probabilities", "FP64", [-1, 2]),
        ("request_id", "INT64", [-1]),
        ("feedback_token", "BYTES", [-1]),
    ]
    regressor = client.get_model_metadata("diabetes_progression")
    assert [t["name"] for t in regressor["outputs"]] == [
        "prediction",
        "request_id",
        "feedback_token",
    ]
    config = client.get_model_config("wine_cultivar")
    assert config["max_batch_size"] == 0 and config["input"][0]["data_type"] == "TYPE_FP64"
    with pytest.raises(InferenceServerException) as missing:
        client.get_model_metadata("no_such_model")
    assert missing.value.status() == "404" or "404" in str(missing.value)
    assert not client.is_model_ready("income_classifier", "9.9")


def test_a_thousand_adult_rows_answer_as_our_own_api_and_are_logged(
    client: triton.InferenceServerClient, adult_rows: pd.DataFrame
) -> None:
    before = MLRequest.objects.count()
    result = client.infer(
        "income_classifier",
        tensors(client, "income_classifier", adult_rows),
        outputs=outputs("label", "probabilities", "request_id", "feedback_token"),
    )
    labels = result.as_numpy("label")
    probabilities = result.as_numpy("probabilities")
    ids = result.as_numpy("request_id")
    assert labels.shape == (1000,) and probabilities.shape == (1000, 2) and ids.shape == (1000,)
    ours = batch_answers(APIClient(), "income_classifier", adult_rows.drop(columns="income"))
    assert [str(v) for v in labels.tolist()] == [row["label"] for row in ours]
    expected = np.array([[row["probabilities"][c] for c in ("<=50K", ">50K")] for row in ours])
    assert np.allclose(probabilities, expected)
    # 1,000 V2 rows and 1,000 batch rows, each logged once.
    assert MLRequest.objects.count() == before + 2000
    row = MLRequest.objects.get(pk=int(ids[3]))
    assert row.response == str(labels[3]) and row.input_data["age"] == adult_rows["age"].iloc[3]
    # Feedback with the row's token, as for our own answers.
    token = result.as_numpy("feedback_token")[3]
    token = token.decode() if isinstance(token, bytes) else str(token)
    answer = APIClient().put(
        f"/api/v1/mlrequests/{int(ids[3])}",
        {"feedback": ">50K", "feedback_token": token},
        format="json",
    )
    assert answer.status_code == 200, answer.content


@pytest.mark.parametrize(
    ("model", "data", "output"),
    [
        ("wine_cultivar", models.wine, "label"),
        ("diabetes_progression", models.diabetes, "prediction"),
    ],
)
def test_a_multiclass_classifier_and_a_regressor_answer_as_predict(
    client: triton.InferenceServerClient, model: str, data: Any, output: str
) -> None:
    x, _ = data()  # the demo models were trained on these data sets' columns
    rows = x.head(25)
    result = client.infer(model, tensors(client, model, rows), outputs=outputs(output))
    answered = result.as_numpy(output).tolist()
    api = APIClient()
    for record, value in zip(rows.to_dict("records"), answered, strict=True):
        ours = api.post(f"/api/v1/{model}/predict", record, format="json").json()
        if output == "label":
            assert (value.decode() if isinstance(value, bytes) else value) == ours["label"]
        else:
            assert value == pytest.approx(ours["prediction"])
    assert [o["name"] for o in result.get_response()["outputs"]] == [output]


def infer_raw(live_server: Any, body: Any, path: str = "income_classifier") -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{live_server.url}/v2/models/{path}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def tensor(name: str, data: list[Any], datatype: str = "FP64", shape: Any = None) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"inputs": [tensor("age", [30, 40]), tensor("fnlwgt", [1.0])]}, "one length"),
        ({"inputs": [tensor("age", ["thirty"])]}, "datatype FP64 needs finite numbers"),
        ({"inputs": [tensor("height", [180])]}, "height"),
        ({"inputs": [tensor("workclass", ["Gig-economy"], "BYTES")]}, "Gig-economy"),
        ({"inputs": [tensor("age", [1, 2], shape=[1, 2])]}, "[n] or [n, 1]"),
        ({"inputs": [tensor("age", [30], "COMPLEX")]}, "'datatype' must be one of"),
        ({"inputs": []}, "non-empty list"),
        ([1, 2], "JSON object"),
        ({"inputs": [tensor("age", [30])], "outputs": [{"name": "prediction"}]}, "Unknown output"),
        ({"inputs": [tensor("age", [30])], "parameters": {"content_type": "np"}}, "'np'"),
    ],
)
def test_bad_tensors_are_a_400_naming_them_in_the_protocols_shape_and_log_nothing(
    live_server: Any, all_demos: MLRegistry, body: Any, words: str
) -> None:
    before = MLRequest.objects.count()
    status, answer = infer_raw(live_server, body)
    assert status == 400, answer
    assert set(answer) == {"error"} and words in answer["error"], answer
    assert MLRequest.objects.count() == before


def test_a_required_feature_missing_is_named(live_server: Any, all_demos: MLRegistry) -> None:
    x, _ = models.wine()
    body = {"inputs": [tensor(name, [float(x[name].iloc[0])]) for name in list(x.columns)[1:]]}
    status, answer = infer_raw(live_server, body, "wine_cultivar")
    assert status == 400 and x.columns[0] in answer["error"] and "required" in answer["error"]


def test_unknown_models_and_versions_are_a_404_and_a_status_selects_another_version(
    live_server: Any, all_demos: MLRegistry
) -> None:
    body: dict[str, Any] = {"inputs": [tensor("age", [30.0])]}
    status, answer = infer_raw(live_server, body, "no_such_model")
    assert status == 404 and set(answer) == {"error"}
    status, answer = infer_raw(live_server, body, "income_classifier/versions/9.9")
    assert status == 404 and "9.9" in answer["error"]
    status, answer = infer_raw(live_server, body, "income_classifier/versions/0.0.1")
    assert status == 200 and answer["model_version"] == "0.0.1"
    body["parameters"] = {"status": "testing", "content_type": "pd"}
    status, answer = infer_raw(live_server, body)
    assert status == 200
    [request_id] = next(o for o in answer["outputs"] if o["name"] == "request_id")["data"]
    assert MLRequest.objects.get(pk=request_id).parent_mlalgorithm.name == "extra trees"
    body["parameters"] = {"status": "shadow"}
    status, answer = infer_raw(live_server, body)
    assert status == 400 and "shadow" in answer["error"]


def test_a_model_name_no_route_takes_is_a_404_in_the_protocols_shape(
    live_server: Any, all_demos: MLRegistry
) -> None:
    """Found by the fuzzer: a name outside the routes' pattern matched no view, and
    Django's 404 answered in our own error shape, not the protocol's."""
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{live_server.url}/v2/models/a%20b/ready", timeout=30)
    assert missing.value.code == 404
    assert set(json.loads(missing.value.read())) == {"error"}


def test_binary_tensors_are_refused_with_a_note(
    client: triton.InferenceServerClient, adult_rows: pd.DataFrame
) -> None:
    tensor_ = triton.InferInput("age", [3], "FP64")
    tensor_.set_data_from_numpy(adult_rows["age"].head(3).to_numpy(np.float64), binary_data=True)
    with pytest.raises(InferenceServerException) as refused:
        client.infer("income_classifier", [tensor_], outputs=outputs("label"))
    assert "binary_data=False" in str(refused.value)


def test_json_tensors_with_tritons_header_length_equal_to_the_body_are_taken(
    live_server: Any, all_demos: MLRegistry
) -> None:
    """Regression: Triton's C++ client (perf_analyzer) sends Inference-Header-Content-Length
    with JSON tensors too, equal to the body's length; only a shorter one means binary
    tensors follow."""
    import urllib.request

    body = json.dumps({"inputs": [tensor("age", [30.0])]}).encode()
    request = urllib.request.Request(
        f"{live_server.url}/v2/models/income_classifier/infer",
        data=body,
        headers={"Inference-Header-Content-Length": str(len(body))},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200


def test_a_body_past_the_protocol_limit_is_a_413(
    live_server: Any, all_demos: MLRegistry, settings: Any
) -> None:
    settings.PROTOCOL_MAX_BODY_BYTES = 2000
    status, answer = infer_raw(live_server, {"inputs": [tensor("age", [30.0] * 500)]})
    assert status == 413 and "PROTOCOL_MAX_BODY_BYTES" in answer["error"]
