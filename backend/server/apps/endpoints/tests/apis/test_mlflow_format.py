"""MLflow's scoring format (``mlflow models serve``'s ``/invocations``): the bodies MLflow's
docs show, posted with ``requests`` to a live server; answers equal predict's for the same
records, with models fitted here on scikit-learn's data sets; probabilities; the log and
feedback; the errors; the routes at the server's root; the schema."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from prometheus_client import REGISTRY
from rest_framework.test import APIClient
from sklearn.linear_model import LogisticRegression

from apps.endpoints.catalogue.register import register_model
from apps.endpoints.models import MLAlgorithm, MLRequest
from apps.ml.registry import MLRegistry
from apps.ml.tests import models

pytestmark = pytest.mark.django_db

WINE, DIABETES, ABC = "wine", "diabetes", "abc"


def abc_classifier() -> LogisticRegression:
    """A model of the three number columns a, b and c of MLflow's docs' examples."""
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(200, 3)) * 3, columns=["a", "b", "c"])
    y = np.where(x["a"] + x["b"] - x["c"] > 0, "high", "low")
    return LogisticRegression().fit(x, y)


def one_feature_classifier() -> LogisticRegression:
    x, y = models.wine()
    return LogisticRegression(max_iter=2000).fit(x[["proline"]], y)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The models, fitted once for the module and saved as a data scientist saves them."""
    folder = tmp_path_factory.mktemp("mlflow_models")
    return {
        WINE: models.save(models.wine_classifier(), folder, "wine.skops"),
        DIABETES: models.save(models.diabetes_regressor(), folder, "diabetes.joblib"),
        ABC: models.save(abc_classifier(), folder, "abc.skops"),
        "proline": models.save(one_feature_classifier(), folder, "proline.skops"),
        "mixed": models.save(models.mixed_classifier(), folder, "mixed.joblib"),
    }


def serve_model(
    files: dict[str, Path],
    endpoint: str,
    *,
    file: str | None = None,
    version: str = "1",
    status: str = "production",
    example: bytes | None = None,
) -> MLAlgorithm:
    return register_model(
        artifact=files[file or endpoint],
        endpoint_name=endpoint,
        name=file or endpoint,
        version=version,
        status=status,
        allow_pickle=True,
        example=example,
    ).algorithm


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a client sends them: JSON (pandas writes 10 significant digits)."""
    rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return rows


def as_sent(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame of the numbers a JSON client sends, for CSV bodies and scikit-learn."""
    return pd.DataFrame(records(frame))


def invoke(
    client: APIClient, endpoint: str | None, body: Any, query: str = "", **extra: Any
) -> Any:
    path = "/invocations" if endpoint is None else f"/api/v1/{endpoint}/invocations"
    if isinstance(body, str):
        return client.generic("POST", path + query, body, content_type="text/csv", **extra)
    return client.post(path + query, json.dumps(body), content_type="application/json", **extra)


def ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


def assert_error(response: Any, status: int, code: str, *fragments: str) -> dict[str, Any]:
    """The one error shape, with ``status`` and ``code``; each fragment somewhere in it."""
    assert response.status_code == status, response.content
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["message"], error
    for fragment in fragments:
        assert fragment in json.dumps(error), (fragment, error)
    return error


def the_four_forms(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The same records in each of MLflow's JSON forms."""
    rows = records(frame)
    return {
        "dataframe_split": {
            "dataframe_split": json.loads(frame.to_json(orient="split", index=False))
        },
        "dataframe_split with its index": {  # pandas' own split form: the index ignored
            "dataframe_split": json.loads(frame.to_json(orient="split"))
        },
        "dataframe_records": {"dataframe_records": rows},
        "instances": {"instances": rows},
        "inputs": {"inputs": {c: [r[c] for r in rows] for c in frame.columns}},
        "inputs as records": {"inputs": rows},
    }


# -- the bodies of MLflow's docs, with requests, against a live server --------------------

# As MLflow's docs show them for `mlflow models serve` (Deployment, "Local Inference
# Server"): a model of columns a, b and c.
DOCS_SPLIT: dict[str, Any] = {
    "dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 2, 3], [4, 5, 6]]}
}
DOCS_RECORDS: dict[str, Any] = {
    "dataframe_records": [{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]
}
DOCS_INSTANCES: dict[str, Any] = {"instances": [{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]}
DOCS_INPUTS: dict[str, Any] = {"inputs": {"a": [1, 4], "b": [2, 5], "c": [3, 6]}}
DOCS_CSV = "a,b,c\n1,2,3\n4,5,6\n"
# The docs' tensor examples: a string and a list of numbers per record, which a model of
# three numbers cannot take (TensorFlow's inputs, not a scikit-learn model's).
DOCS_TENSOR_INPUTS: dict[str, Any] = {
    "inputs": {"a": ["s1", "s2", "s3"], "b": [1, 2, 3], "c": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}
}


@pytest.fixture
def live(live_server: Any, registry: MLRegistry, files: dict[str, Path]) -> Iterator[str]:
    """pytest-django's live server (a thread of this process, the test settings) serving
    the one endpoint ``abc``, as ``mlflow models serve`` serves one model."""
    serve_model(files, ABC)
    yield str(live_server.url)


@pytest.mark.django_db(transaction=True)
def test_the_bodies_of_mlflows_docs_are_answered_as_mlflow_answers_them(live: str) -> None:
    expected = abc_classifier().predict(pd.DataFrame([[1, 2, 3], [4, 5, 6]], columns=list("abc")))
    for url in (f"{live}/invocations", f"{live}/api/v1/{ABC}/invocations"):
        for payload in (DOCS_SPLIT, DOCS_RECORDS, DOCS_INSTANCES, DOCS_INPUTS):
            # As MLflow's docs and users' scripts post: requests' json=, or data= and a header.
            for response in (
                requests.post(url, json=payload, timeout=30),
                requests.post(
                    url,
                    data=json.dumps(payload),
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                ),
            ):
                assert response.status_code == 200, response.text
                assert response.headers["Content-Type"] == "application/json"
                answer = response.json()
                assert answer["predictions"] == list(expected), payload
                assert len(answer["request_ids"]) == len(answer["feedback_tokens"]) == 2
        response = requests.post(
            url, data=DOCS_CSV, headers={"Content-Type": "text/csv"}, timeout=30
        )
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == list(expected)
        tensors = requests.post(url, json=DOCS_TENSOR_INPUTS, timeout=30)
        assert tensors.status_code == 400
        error = tensors.json()["error"]
        assert error["code"] == "invalid_input"
        assert set(error["details"]) == {"a", "c"}  # a string and lists: not numbers
    assert MLRequest.objects.count() == 2 * (4 * 2 + 1) * 2


@pytest.mark.django_db(transaction=True)
def test_ping_and_health_answer_200_while_the_server_runs(live: str) -> None:
    for path in ("/ping", "/health"):
        response = requests.get(live + path, timeout=30)
        assert response.status_code == 200 and response.text == "\n"
        assert response.headers["Content-Type"].startswith("text/plain")
    refused = requests.post(live + "/ping", timeout=30)
    assert refused.status_code == 405 and refused.json()["error"]["code"] == "method_not_allowed"


# -- answers equal predict's --------------------------------------------------------------


def test_each_form_answers_what_predict_answers_for_the_same_records(
    api: APIClient, registry: MLRegistry, files: dict[str, Path]
) -> None:
    serve_model(files, WINE)
    x, _ = models.wine()
    frame = as_sent(x.iloc[::29])  # 7 records of the three classes
    by_predict = [
        ok(api.post(f"/api/v1/{WINE}/predict", r, format="json"))["label"] for r in records(frame)
    ]
    assert set(by_predict) == {"barolo", "grignolino", "barbera"}
    for form, body in the_four_forms(frame).items():
        assert ok(invoke(api, WINE, body))["predictions"] == by_predict, form
    assert ok(invoke(api, WINE, frame.to_csv(index=False)))["predictions"] == by_predict


def test_a_regressor_answers_its_numbers(
    api: APIClient, registry: MLRegistry, files: dict[str, Path]
) -> None:
    serve_model(files, DIABETES)
    x, _ = models.diabetes()
    frame = as_sent(x.head(5))
    by_predict = [
        ok(api.post(f"/api/v1/{DIABETES}/predict", r, format="json"))["prediction"]
        for r in records(frame)
    ]
    assert by_predict == pytest.approx(models.diabetes_regressor().predict(frame), rel=1e-12)
    for form, body in the_four_forms(frame).items():
        assert ok(invoke(api, DIABETES, body))["predictions"] == by_predict, form
    from_csv = ok(invoke(api, DIABETES, frame.to_csv(index=False)))["predictions"]
    assert from_csv == pytest.approx(by_predict, rel=1e-12)
    error = assert_error(
        invoke(api, DIABETES, {"inputs": records(frame)}, "?probabilities=true"),
        400,
        "invalid_input",
        "regressor",
    )
    assert error["details"] == {"probabilities": ["Not available for this model."]}
    assert MLRequest.objects.count() == 5 + 6 * 5 + 5  # the refused request logged nothing


def test_probabilities_are_a_list_beside_the_predictions_when_asked(
    api: APIClient, registry: MLRegistry, files: dict[str, Path]
) -> None:
    serve_model(files, WINE)
    x, _ = models.wine()
    frame = as_sent(x.iloc[::45])
    body = {"dataframe_records": records(frame)}
    plain = ok(invoke(api, WINE, body))
    assert set(plain) == {"predictions", "request_ids", "feedback_tokens"}
    by_predict = [
        ok(api.post(f"/api/v1/{WINE}/predict", r, format="json"))["probabilities"]
        for r in records(frame)
    ]
    asked = ok(invoke(api, WINE, {**body, "params": {"probabilities": True}}))
    assert list(asked) == ["predictions", "probabilities", "request_ids", "feedback_tokens"]
    assert asked["predictions"] == plain["predictions"]  # the same labels, asked or not
    # A batch's matrix products may differ from one record's in the last bit.
    assert asked["probabilities"] == [pytest.approx(p, abs=1e-12) for p in by_predict]
    assert list(asked["probabilities"][0]) == ["barbera", "barolo", "grignolino"]
    by_query = ok(invoke(api, WINE, body, "?probabilities=true"))["probabilities"]
    assert by_query == asked["probabilities"]
    from_csv = ok(invoke(api, WINE, frame.to_csv(index=False), "?probabilities=1"))
    assert from_csv["probabilities"] == asked["probabilities"]
    off = ok(invoke(api, WINE, {**body, "params": {"probabilities": False}}))
    assert "probabilities" not in off


def test_every_record_is_logged_with_a_token_that_takes_its_feedback(
    api: APIClient, registry: MLRegistry, files: dict[str, Path]
) -> None:
    wine = serve_model(files, WINE)
    x, y = models.wine()
    frame = as_sent(x.head(3))
    for body in (the_four_forms(frame)["dataframe_split"], frame.to_csv(index=False)):
        answer = ok(invoke(api, WINE, body))
        rows = list(MLRequest.objects.filter(pk__in=answer["request_ids"]).order_by("pk"))
        assert [row.pk for row in rows] == answer["request_ids"]
        assert {row.parent_mlalgorithm_id for row in rows} == {wine.pk}
        assert [row.response for row in rows] == answer["predictions"]
        for row, record in zip(rows, records(frame), strict=True):
            # JSON's numbers as sent; a CSV's cells as text, as a batch file's are logged.
            assert {k: float(v) for k, v in row.input_data.items()} == record
        given_back = zip(answer["request_ids"], answer["feedback_tokens"], y[:3], strict=True)
        for pk, token, truth in given_back:
            given = {"feedback": truth, "feedback_token": token}
            response = api.put(f"/api/v1/mlrequests/{pk}", given, format="json")
            assert response.status_code == 200, response.content
        feedback = MLRequest.objects.filter(pk__in=answer["request_ids"]).order_by("pk")
        assert list(feedback.values_list("feedback", flat=True)) == list(y[:3])
        first, second = answer["request_ids"][0], answer["feedback_tokens"][1]
        forged = {"feedback": y[0], "feedback_token": second}  # another record's token
        assert api.put(f"/api/v1/mlrequests/{first}", forged, format="json").status_code == 403


def test_plain_values_are_the_column_of_a_model_of_one_feature(
    api: APIClient, registry: MLRegistry, files: dict[str, Path]
) -> None:
    serve_model(files, "proline")
    values = [1065.0, 520.0, 1480.0, 735.0]
    by_predict = [
        ok(api.post("/api/v1/proline/predict", {"proline": v}, format="json"))["label"]
        for v in values
    ]
    assert ok(invoke(api, "proline", {"instances": values}))["predictions"] == by_predict
    assert ok(invoke(api, "proline", {"inputs": values}))["predictions"] == by_predict
    assert ok(invoke(api, "proline", {"inputs": {"proline": 520}}))["predictions"] == [
        by_predict[1]
    ]  # every value plain: one record


def test_a_csv_may_leave_an_optional_column_out_but_not_a_required_one(
    api: APIClient, registry: MLRegistry, files: dict[str, Path]
) -> None:
    frame, _ = models.mixed_frame()  # hue has gaps in the input example: optional
    serve_model(files, "mixed", example=models.example_csv(frame, rows=30))
    some = frame.iloc[1:40:6].drop(columns=["hue"])
    by_predict = [
        ok(api.post("/api/v1/mixed/predict", r, format="json"))["label"] for r in records(some)
    ]
    assert ok(invoke(api, "mixed", some.to_csv(index=False)))["predictions"] == by_predict
    logged = MLRequest.objects.order_by("-pk").first()
    assert logged is not None and "hue" not in logged.input_data
    without_alcohol = some.drop(columns=["alcohol"]).to_csv(index=False)
    error = assert_error(invoke(api, "mixed", without_alcohol), 400, "invalid_input", "alcohol")
    assert error["details"] == {"alcohol": ["This feature is required: add its column."]}


# -- errors --------------------------------------------------------------------------------

_X, _ = models.wine()
_TWO = records(_X.head(2))
_SPLIT = json.loads(_X.head(2).to_json(orient="split", index=False))
_CSV = _X.head(2).to_csv(index=False)
BAD_BODIES: dict[str, tuple[Any, str, str]] = {
    "malformed JSON": ('{"dataframe_records": [', "parse_error", "JSON parse error"),
    "a JSON list": (_TWO, "invalid_input", "JSON object"),
    "none of the four keys": ({}, "invalid_input", "none of the input formats"),
    "two of the four keys": (
        {"dataframe_records": _TWO, "instances": _TWO},
        "invalid_input",
        "2 input formats",
    ),
    "an unknown key": ({"dataframe_records": _TWO, "extra": 1}, "invalid_input", "'extra'"),
    "a row of another length than the columns": (
        {"dataframe_split": {**_SPLIT, "data": [_SPLIT["data"][0], _SPLIT["data"][1][:-1]]}},
        "invalid_input",
        "dataframe_split.data[1]",
    ),
    "a column named twice": (
        {"dataframe_split": {"columns": ["alcohol", "alcohol"], "data": [[1, 2]]}},
        "invalid_input",
        "more than once",
    ),
    "no records": ({"dataframe_records": []}, "invalid_input", "one or more"),
    "an unknown column": (
        {"dataframe_records": [_TWO[0], {**_TWO[1], "colour": "red"}]},
        "invalid_input",
        "colour",
    ),
    "a bad value": (
        {"inputs": {**{k: [v] for k, v in _TWO[0].items()}, "alcohol": ["strong"]}},
        "invalid_input",
        "strong",
    ),
    "rows without names": ({"instances": _SPLIT["data"]}, "invalid_input", "without names"),
    "plain values for a model of 13 features": (
        {"instances": [1, 2]},
        "invalid_input",
        "one feature",
    ),
    "columns of unequal lengths": (
        {"inputs": {"alcohol": [1, 2], "malic_acid": [1]}},
        "invalid_input",
        "as many values",
    ),
    "lists mixed with plain values": (
        {"inputs": {"alcohol": [1, 2], "malic_acid": 1}},
        "invalid_input",
        "mixes lists",
    ),
    "an unknown parameter": (
        {"dataframe_records": _TWO, "params": {"temperature": 0.1}},
        "invalid_input",
        "temperature",
    ),
    "probabilities that are not a boolean": (
        {"dataframe_records": _TWO, "params": {"probabilities": "yes"}},
        "invalid_input",
        "params.probabilities",
    ),
    "a CSV with an unknown column": (
        _X.head(2).assign(colour="red").to_csv(index=False),
        "invalid_input",
        "unknown column 'colour'",
    ),
    "a CSV without a required column": (
        _X.head(2).drop(columns=["proline"]).to_csv(index=False),
        "invalid_input",
        "missing feature column 'proline'",
    ),
    "a CSV with a ragged row": (_CSV + "1,2\n", "invalid_input", "Line 4 has 2 fields"),
    "a CSV with a bad cell": (
        _CSV.replace("14.23", "strong", 1),
        "invalid_input",
        "Line 2, column 'alcohol'",
    ),
    "a CSV of a header alone": (_CSV.splitlines()[0], "invalid_input", "no rows"),
    "an empty CSV": ("", "invalid_input", "empty"),
}


@pytest.mark.parametrize("case", BAD_BODIES, ids=list(BAD_BODIES))
def test_a_bad_body_is_a_400_naming_the_problem_and_logs_nothing(
    api: APIClient, registry: MLRegistry, files: dict[str, Path], case: str
) -> None:
    serve_model(files, WINE)
    body, code, fragment = BAD_BODIES[case]
    if case == "malformed JSON":
        response = api.post(f"/api/v1/{WINE}/invocations", body, content_type="application/json")
    else:
        response = invoke(api, WINE, body)
    assert_error(response, 400, code, fragment)
    assert MLRequest.objects.count() == 0


def test_a_split_of_many_columns_is_refused_in_a_short_answer_at_once(
    api: APIClient, registry: MLRegistry, files: dict[str, Path]
) -> None:
    serve_model(files, WINE)
    names = [f"c{i}" for i in range(50_000)]  # 0.4 MB, well within the body's bound
    body = {"dataframe_split": {"columns": names, "data": [[0] * len(names)]}}
    started = time.perf_counter()
    error = assert_error(invoke(api, WINE, body), 400, "invalid_input", "c0")
    assert time.perf_counter() - started < 5  # was 30 s: each name counted in the list
    assert error["details_omitted"] > 49_000  # the answer lists 50 of them
    repeated = {"dataframe_split": {"columns": [*names, "c7"], "data": [[0] * 50_001]}}
    assert_error(invoke(api, WINE, repeated), 400, "invalid_input", "'c7' appears more than once")


def test_the_routes_own_errors_answer_our_status_codes(
    api: APIClient, registry: MLRegistry, files: dict[str, Path], settings: Any
) -> None:
    serve_model(files, WINE)
    body = {"dataframe_records": _TWO}
    assert_error(invoke(api, "no_such_model", body), 404, "endpoint_not_found", "no_such_model")
    assert_error(invoke(api, WINE, body, "?version=9"), 404, "algorithm_not_found", "'9'")
    assert_error(invoke(api, WINE, body, "?status=shadow"), 400, "invalid_input", "shadow")
    assert_error(
        invoke(api, WINE, body, "?probabilities=maybe"), 400, "invalid_input", "probabilities"
    )
    path = f"/api/v1/{WINE}/invocations"
    for content_type in ("", "text/plain", "application/x-www-form-urlencoded"):
        response = api.generic("POST", path, "alcohol=1", content_type=content_type)
        assert_error(response, 415, "unsupported_media_type", content_type)
    assert_error(api.post(path, {"dataframe_records": "x"}), 415, "unsupported_media_type")
    # The wire protocols' bound (server/bodies.py), not predict's MAX_BODY_BYTES: a batch.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    assert ok(invoke(api, WINE, {"dataframe_records": records(_X.head(20))}))
    settings.PROTOCOL_MAX_BODY_BYTES = 1000
    big = _X.head(20).to_csv(index=False)
    assert_error(invoke(api, WINE, big), 413, "too_large", "PROTOCOL_MAX_BODY_BYTES", "1000")
    assert_error(invoke(api, None, {"dataframe_records": records(_X.head(20))}), 413, "too_large")
    assert MLRequest.objects.count() == 20  # the one within the bound


# -- the rest as predict -------------------------------------------------------------------


def test_status_version_and_the_assignment_key_choose_the_version_as_predict(
    api: APIClient, staff_api: APIClient, registry: MLRegistry, files: dict[str, Path]
) -> None:
    first = serve_model(files, WINE, version="1")
    second = serve_model(files, WINE, version="2", status="testing")
    body = {"dataframe_records": _TWO}

    def served_by(query: str = "", **headers: str) -> set[int | None]:
        ids = ok(invoke(api, WINE, body, query, **headers))["request_ids"]
        rows = MLRequest.objects.filter(pk__in=ids)
        return set(rows.values_list("parent_mlalgorithm_id", flat=True))

    assert served_by() == {first.pk}
    assert served_by("?status=testing") == {second.pk}
    assert served_by("?status=testing&version=2") == {second.pk}
    test = staff_api.post(
        "/api/v1/abtests",
        {"title": "1 vs 2", "parent_mlalgorithm_1": first.pk, "parent_mlalgorithm_2": second.pk},
        format="json",
    )
    assert test.status_code == 201, test.content
    for key in ("alice", "bob"):  # sticky: each key's requests go to one arm
        arms = set().union(
            *(served_by("?status=ab_testing", HTTP_X_ASSIGNMENT_KEY=key) for _ in range(4))
        )
        assert len(arms) == 1, key
    everyone = set().union(
        *(served_by("?status=ab_testing", HTTP_X_ASSIGNMENT_KEY=f"k{i}") for i in range(30))
    )
    assert everyone == {first.pk, second.pk}
    routed = MLRequest.objects.filter(ab_test__isnull=False).values_list("ab_test", flat=True)
    assert set(routed) == {test.json()["id"]}


def test_predictions_are_counted_in_the_metrics_and_the_route_timed(
    api: APIClient, registry: MLRegistry, files: dict[str, Path]
) -> None:
    serve_model(files, WINE)
    labels = {"endpoint": WINE, "algorithm": WINE, "version": "1", "status": "production"}

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = value("ml_predictions_total", **labels)
    timed = value(
        "ml_http_request_duration_seconds_count", view="mlflow-invocations", method="POST"
    )
    ok(invoke(api, WINE, {"dataframe_records": records(_X.head(3))}))
    assert value("ml_predictions_total", **labels) == before + 3
    assert (
        value("ml_http_request_duration_seconds_count", view="mlflow-invocations", method="POST")
        == timed + 1
    )


def test_the_predict_rate_and_access_apply(
    api: APIClient,
    registry: MLRegistry,
    files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    django_user_model: Any,
) -> None:
    from django.core.cache import cache
    from rest_framework.authtoken.models import Token
    from rest_framework.throttling import ScopedRateThrottle

    serve_model(files, WINE)
    body = {"dataframe_records": _TWO}
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"predict": "2/minute"})
    cache.clear()
    try:  # predict's allowance and this route's are one
        assert api.post(f"/api/v1/{WINE}/predict", _TWO[0], format="json").status_code == 200
        assert invoke(api, WINE, body).status_code == 200
        assert_error(invoke(api, WINE, body), 429, "throttled")
        assert_error(invoke(api, None, body), 429, "throttled")
    finally:
        cache.clear()
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"predict": None})
    settings.PREDICT_ACCESS = "token"
    assert_error(invoke(api, WINE, body), 401, "not_authenticated")
    user = django_user_model.objects.create_user("client", password="pw")
    key = Token.objects.create(user=user).key
    answer = ok(invoke(api, WINE, body, HTTP_AUTHORIZATION=f"Token {key}"))
    rows = MLRequest.objects.filter(pk__in=answer["request_ids"])
    assert set(rows.values_list("user", flat=True)) == {user.pk}


# -- at the server's root, as mlflow models serve ------------------------------------------


def test_the_root_invocations_serves_the_only_endpoint_and_names_several(
    api: APIClient, registry: MLRegistry, files: dict[str, Path]
) -> None:
    body = {"dataframe_records": _TWO}
    assert_error(invoke(api, None, body), 404, "endpoint_not_found")
    serve_model(files, WINE)
    assert ok(invoke(api, None, body))["predictions"] == ok(invoke(api, WINE, body))["predictions"]
    serve_model(files, DIABETES)
    error = assert_error(invoke(api, None, body), 400, "invalid_input", "diabetes, wine")
    assert error["details"] == {"endpoints": [DIABETES, WINE]}
    assert "/api/v1/<endpoint_name>/invocations" in error["message"]


# -- the schema ------------------------------------------------------------------------------


def test_the_schema_documents_both_routes_with_an_example_of_each_form(
    api: APIClient, registry: MLRegistry
) -> None:
    spec = api.get("/api/v1/schema", {"format": "json"}).json()
    for path in ("/api/v1/{endpoint_name}/invocations", "/invocations"):
        post = spec["paths"][path]["post"]
        assert post["tags"] == ["mlflow"]
        content = post["requestBody"]["content"]
        assert set(content) == {"application/json", "text/csv"}
        examples = content["application/json"]["examples"]
        shown = {form for e in examples.values() for form in e["value"] if form != "params"}
        assert shown == {"dataframe_split", "dataframe_records", "instances", "inputs"}
        assert content["text/csv"]["examples"]
        answer = post["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer["required"] == ["predictions", "request_ids", "feedback_tokens"]
        parameters = {p["name"] for p in post["parameters"]}
        assert parameters >= {"status", "version", "X-Assignment-Key", "probabilities"}
        assert post["responses"]["415"]["content"]["application/json"]["schema"]["$ref"]
    # The operation ids and tags of /api/v1 stay as they were before routes outside it.
    assert spec["paths"]["/api/v1/{endpoint_name}/predict"]["post"]["operationId"] == (
        "predict_create"
    )
    assert spec["paths"]["/api/v1/endpoints"]["get"]["tags"] == ["endpoints"]
