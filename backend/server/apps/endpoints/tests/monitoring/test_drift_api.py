"""Drift monitoring end to end, on the Adult data through the real routes: the reference made
at registration from the training split, the window filled by predict, batch-predict and
refused requests, and what the API, the report page and /metrics say. The statistics
themselves are tested in apps/ml/tests/test_drift.py."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from adult import load_split  # research/adult.py
from apps.endpoints.catalogue.register import register_model
from apps.endpoints.catalogue.selectors import forget_selections
from apps.endpoints.models import DriftReference, DriftSegment, MLAlgorithm
from apps.endpoints.monitoring import references, window
from apps.endpoints.shadows import selectors as shadow_selectors
from apps.endpoints.tests.factories import operator
from apps.ml.income_classifier.schema import FEATURES as ADULT_FEATURES
from apps.ml.registry import MLRegistry

pytestmark = pytest.mark.django_db

FEATURES = list(ADULT_FEATURES)


@pytest.fixture(scope="module")
def train_csv() -> bytes:
    data: bytes = load_split("adult.data").to_csv(index=False).encode()
    return data


@pytest.fixture(scope="module")
def test_split() -> pd.DataFrame:
    return load_split("adult.test")


@pytest.fixture(autouse=True)
def _fresh_window() -> Any:
    window.reset()
    references.forget()
    yield
    window.reset()
    references.forget()
    # A test that caches selections (PREDICT_CACHE_SECONDS) leaves none to the next.
    forget_selections()
    shadow_selectors.forget()


def forest(registry: MLRegistry, reference: bytes | None, **kw: Any) -> MLAlgorithm:
    return register_model(
        artifact=registry.artifacts_root / "random_forest.joblib",
        endpoint_name="income_classifier",
        name="random forest",
        version="0.0.1",
        status="production",
        owner="tests",
        allow_pickle=True,
        kind="income_classifier",
        target_column="income",
        reference=reference,
        reference_name="adult.data.csv",
        **kw,
    ).algorithm


def batch(client: APIClient, frame: pd.DataFrame) -> Any:
    data = frame[FEATURES].to_csv(index=False).encode()
    upload = SimpleUploadedFile("rows.csv", data, content_type="text/csv")
    return client.post(
        "/api/v1/batch-predict",
        {"file": upload, "endpoint": "income_classifier"},
        format="multipart",
    )


def drift_of(client: APIClient) -> dict[str, Any]:
    response = client.get("/api/v1/income_classifier/drift")
    assert response.status_code == 200, response.content
    [version] = response.json()["versions"]
    return dict(version)


def flagged(version: dict[str, Any], role: str = "input") -> dict[str, list[str]]:
    return {f["name"]: f["flags"] for f in version["features"] if f["flags"] and f["role"] == role}


def feature(version: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in version["features"] if f["name"] == name)


# -- the reference -------------------------------------------------------------------------


def test_registration_profiles_the_reference_and_the_card_says_so(
    registry: MLRegistry, train_csv: bytes, api: APIClient
) -> None:
    algorithm = forest(registry, train_csv)
    reference = DriftReference.objects.get(algorithm=algorithm)
    assert reference.rows == 32561 and reference.replaced_at is None
    names = [f["name"] for f in reference.profile["features"]]
    assert names == [*FEATURES, "label"]  # the inputs, then the output
    assert len(str(reference.profile)) < 40_000  # kilobytes, not the sample
    card = api.get(f"/api/v1/mlalgorithms/{algorithm.pk}").json()
    assert card["drift"]["reference"]["rows"] == 32561
    assert card["drift"]["report"] == f"/mlalgorithms/{algorithm.pk}/drift"


def test_a_version_without_reference_says_drift_is_not_computed(
    registry: MLRegistry, api: APIClient
) -> None:
    algorithm = forest(registry, None)
    assert not DriftReference.objects.exists()
    card = api.get(f"/api/v1/mlalgorithms/{algorithm.pk}").json()
    assert card["drift"]["reference"] is None and "not computed" in card["drift"]["note"]
    version = drift_of(api)
    assert version["reference"] is None and version["features"] == []
    assert "no reference" in version["note"]


def test_a_reference_with_other_columns_is_refused_naming_them(
    registry: MLRegistry, train_csv: bytes
) -> None:
    frame = pd.read_csv(io.BytesIO(train_csv)).assign(salary=1, bonus=2)
    from apps.core.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        forest(registry, frame.to_csv(index=False).encode())
    assert "salary" in refused.value.message and "bonus" in refused.value.message
    assert refused.value.details["columns"] == ["salary", "bonus"]
    assert not MLAlgorithm.objects.exists()  # nothing registered


def test_a_reference_too_small_registers_without_profile_with_a_note(
    registry: MLRegistry, train_csv: bytes
) -> None:
    small = pd.read_csv(io.BytesIO(train_csv)).head(40).to_csv(index=False).encode()
    registered = register_model(
        artifact=registry.artifacts_root / "random_forest.joblib",
        endpoint_name="income_classifier",
        name="random forest",
        version="0.0.1",
        owner="tests",
        allow_pickle=True,
        kind="income_classifier",
        target_column="income",
        reference=small,
    )
    assert not DriftReference.objects.exists()
    assert any("40 rows" in note and "at least 100" in note for note in registered.notes)


def test_a_reference_whose_values_the_model_refuses_is_a_400_naming_the_cell(
    registry: MLRegistry, train_csv: bytes
) -> None:
    frame = pd.read_csv(io.BytesIO(train_csv), dtype=str)
    frame.loc[7, "age"] = "forty"
    from apps.core.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        forest(registry, frame.to_csv(index=False).encode())
    assert "reference file" in refused.value.message and "Line 9" in refused.value.message


# -- the proof: no drift, no alarm; drift found ------------------------------------------------


def test_the_test_split_through_batch_and_predict_flags_nothing(
    registry: MLRegistry, train_csv: bytes, test_split: pd.DataFrame, api: APIClient
) -> None:
    forest(registry, train_csv)
    assert batch(api, test_split).status_code == 200  # all 16,281 rows
    for record in test_split[FEATURES].head(30).to_dict("records"):
        clean = {k: v for k, v in record.items() if isinstance(v, str) or v == v}
        assert (
            api.post("/api/v1/income_classifier/predict", clean, format="json").status_code == 200
        )
    version = drift_of(api)
    assert version["window"]["records"] == 5000  # the last W of 16,311
    assert flagged(version) == {} and flagged(version, "output") == {}
    assert version["drifting"] == 0
    age = feature(version, "age")
    assert age["measures"]["psi"] is not None and age["measures"]["psi"] < 0.05


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("age+10", {"age"}),
        ("hours*1.5", {"hours-per-week"}),
        ("occupation missing 20%", {"occupation"}),
    ],
)
def test_a_changed_feature_is_flagged_and_only_it(
    registry: MLRegistry,
    train_csv: bytes,
    test_split: pd.DataFrame,
    api: APIClient,
    change: str,
    expected: set[str],
) -> None:
    forest(registry, train_csv)
    frame = test_split.head(5000).copy()
    rng = np.random.default_rng(7)
    if change == "age+10":
        frame["age"] += 10
    elif change == "hours*1.5":
        frame["hours-per-week"] = (frame["hours-per-week"] * 1.5).round()
    else:
        frame.loc[rng.random(len(frame)) < 0.2, "occupation"] = np.nan
    assert batch(api, frame).status_code == 200
    version = drift_of(api)
    assert version["window"]["records"] == 5000
    assert set(flagged(version)) == expected, flagged(version)
    if change.startswith("occupation"):
        shares = feature(version, "occupation")["shares"]
        assert shares["missing"] - shares["reference_missing"] > 0.15
        assert flagged(version)["occupation"] == ["missing"]


def test_unseen_categories_count_although_the_file_is_refused(
    registry: MLRegistry,
    train_csv: bytes,
    test_split: pd.DataFrame,
    api: APIClient,
    settings: Any,
) -> None:
    forest(registry, train_csv)
    frame = test_split.head(5000).copy()
    replaced = np.random.default_rng(3).random(len(frame)) < 0.3
    frame.loc[replaced, "workclass"] = "Gig-economy"
    response = batch(api, frame)
    assert response.status_code == 400 and "workclass" in response.json()["error"]["message"]
    version = drift_of(api)
    # The rows read before the refusal: the file's first chunk, a quarter of
    # BATCH_CHUNK_ROWS (batch/reading.py, chunk_plan), here 2,500 of the 5,000.
    read = settings.BATCH_CHUNK_ROWS // 4
    assert 0 < read < len(frame)
    assert version["window"]["records"] == read
    assert set(flagged(version)) == {"workclass"}
    workclass = feature(version, "workclass")
    assert "unseen" in workclass["flags"]
    assert workclass["shares"]["unseen"] == pytest.approx(replaced[:read].mean(), abs=0.001)
    # Nothing was predicted: the output has no records in the window.
    assert feature(version, "label")["rows"] == 0


def test_a_refused_prediction_counts_its_refused_value(
    registry: MLRegistry, train_csv: bytes, api: APIClient
) -> None:
    forest(registry, train_csv)
    response = api.post(
        "/api/v1/income_classifier/predict",
        {"age": "old", "workclass": "Private", "native-country": "Atlantis"},
        format="json",
    )
    assert response.status_code == 400
    version = drift_of(api)
    assert version["window"]["records"] == 1
    assert feature(version, "age")["shares"]["invalid"] == 1.0
    assert feature(version, "native-country")["shares"]["unseen"] == 1.0
    assert feature(version, "workclass")["shares"]["invalid"] == 0.0
    assert version["drifting"] == 0  # one record is below DRIFT_MIN_RECORDS: no flag
    assert "from 500 on" in version["note"]


# -- the window ----------------------------------------------------------------------------


def test_windows_at_their_edges(
    registry: MLRegistry, train_csv: bytes, test_split: pd.DataFrame, api: APIClient, settings: Any
) -> None:
    settings.DRIFT_WINDOW = 40
    forest(registry, train_csv)
    empty = drift_of(api)
    assert empty["window"]["records"] == 0
    assert all(f["rows"] == 0 and f["measures"]["psi"] is None for f in empty["features"])
    records = test_split[FEATURES].fillna("?").head(41).to_dict("records")
    assert (
        api.post("/api/v1/income_classifier/predict", records[0], format="json").status_code == 200
    )
    assert drift_of(api)["window"]["records"] == 1
    assert batch(api, test_split.iloc[1:40]).status_code == 200
    assert drift_of(api)["window"]["records"] == 40  # exactly W
    assert batch(api, test_split.iloc[40:41]).status_code == 200
    assert drift_of(api)["window"]["records"] == 40  # the oldest record left
    # Segments beyond the window were deleted as new ones arrived.
    assert sum(DriftSegment.objects.values_list("rows", flat=True)) <= 40 + 1


def test_the_window_is_the_last_records_of_every_process_writing_to_it(
    registry: MLRegistry, train_csv: bytes, settings: Any
) -> None:
    """Each process writes its own records as segments; any process reads the newest W of
    all of them, oldest first."""
    settings.DRIFT_WINDOW = 10
    algorithm = forest(registry, train_csv)
    reference = DriftReference.objects.get(algorithm=algorithm)
    columns = len(reference.profile["features"])
    first = np.full((6, columns), 1, np.int16)  # "another process"
    second = np.full((7, columns), 2, np.int16)
    window.write({reference.pk: first})
    window.write({reference.pk: second})
    seen = window.codes(reference.pk, 10, columns)
    assert seen.shape == (10, columns)
    assert (seen[:3] == 1).all() and (seen[3:] == 2).all()


def test_a_segment_is_written_without_a_transaction_around_its_statements(
    registry: MLRegistry, train_csv: bytes, settings: Any
) -> None:
    """On SQLite a transaction holds the one write lock from BEGIN to COMMIT, across the
    flushing thread's waits for the GIL, while every worker's predictions wait to log
    (issue 28's cost): a segment and its prune are single statements, each its own."""
    settings.DRIFT_WINDOW = 10
    algorithm = forest(registry, train_csv)
    reference = DriftReference.objects.get(algorithm=algorithm)
    columns = len(reference.profile["features"])
    window.write({reference.pk: np.full((6, columns), 1, np.int16)})
    window.write({reference.pk: np.full((7, columns), 2, np.int16)})
    with CaptureQueriesContext(connection) as seen:
        window.write({reference.pk: np.full((5, columns), 3, np.int16)})
    statements = [q["sql"].split()[0].upper() for q in seen.captured_queries]
    assert statements == ["SELECT", "INSERT", "SELECT", "DELETE"], statements
    assert list(DriftSegment.objects.values_list("rows", flat=True)) == [5, 7]  # newest first


def test_monitoring_off_records_nothing(
    registry: MLRegistry, train_csv: bytes, test_split: pd.DataFrame, api: APIClient, settings: Any
) -> None:
    settings.DRIFT_MONITORING = False
    forest(registry, train_csv)
    assert batch(api, test_split.head(100)).status_code == 200
    version = drift_of(api)
    assert version["window"]["records"] == 0 and version["monitoring"] is False


# -- renewing, reading, showing ------------------------------------------------------------


def test_an_operator_renews_the_reference_and_the_old_one_stays_in_history(
    registry: MLRegistry, train_csv: bytes, test_split: pd.DataFrame, api: APIClient
) -> None:
    algorithm = forest(registry, train_csv)
    assert batch(api, test_split.head(600)).status_code == 200
    assert drift_of(api)["window"]["records"] == 600
    data = test_split[FEATURES].head(1000).to_csv(index=False).encode()

    def upload() -> SimpleUploadedFile:
        return SimpleUploadedFile("2026.csv", data, content_type="text/csv")

    url = f"/api/v1/mlalgorithms/{algorithm.pk}/reference"
    assert api.post(url, {"reference": upload()}, format="multipart").status_code in (401, 403)
    registrar = APIClient()
    registrar.force_authenticate(operator("registrar", permissions=["add_mlalgorithm"]))
    assert registrar.post(url, {"reference": upload()}, format="multipart").status_code == 403
    staff = APIClient()
    staff.force_authenticate(operator(permissions=["change_mlalgorithm"]))
    response = staff.post(url, {"reference": upload()}, format="multipart")
    assert response.status_code == 201, response.content
    assert response.json()["rows"] == 1000 and response.json()["file_name"] == "2026.csv"
    history = list(DriftReference.objects.filter(algorithm=algorithm).order_by("pk"))
    assert [r.rows for r in history] == [32561, 1000]
    assert history[0].replaced_at is not None and history[1].replaced_at is None
    version = drift_of(api)
    assert version["reference"]["rows"] == 1000
    assert version["window"]["records"] == 0  # the old bins' records went with the old profile


def test_renewing_with_a_bad_file_is_a_400_and_keeps_the_reference(
    registry: MLRegistry, train_csv: bytes
) -> None:
    algorithm = forest(registry, train_csv)
    url = f"/api/v1/mlalgorithms/{algorithm.pk}/reference"
    staff = APIClient()
    staff.force_authenticate(operator(permissions=["change_mlalgorithm"]))
    for content, words in (
        (b"age,colour\n1,red\n", "colour"),
        (b"", "empty"),
        (b"\xff\xfe\x00garbage", "not a CSV"),
        (load_split("adult.data").head(5).to_csv(index=False).encode(), "at least 100"),
    ):
        upload = SimpleUploadedFile("ref.csv", content, content_type="text/csv")
        response = staff.post(url, {"reference": upload}, format="multipart")
        assert response.status_code == 400, response.content
        assert words in response.json()["error"]["message"]
    assert DriftReference.objects.get().rows == 32561


def test_unknown_endpoint_or_version_is_a_404(
    registry: MLRegistry, train_csv: bytes, api: APIClient
) -> None:
    algorithm = forest(registry, train_csv)
    assert api.get("/api/v1/nothing/drift").status_code == 404
    assert api.get("/api/v1/income_classifier/drift?version=9.9").status_code == 404
    by_id = api.get(f"/api/v1/endpoints/{algorithm.parent_endpoint_id}/drift?version=0.0.1")
    assert by_id.status_code == 200 and by_id.json()["versions"][0]["algorithm"] == algorithm.pk
    assert api.get("/api/v1/endpoints/999/drift").status_code == 404


def test_the_report_page_shows_histograms_most_drifted_first(
    registry: MLRegistry, train_csv: bytes, test_split: pd.DataFrame, api: APIClient
) -> None:
    algorithm = forest(registry, train_csv)
    frame = test_split.head(2000).copy()
    frame["age"] += 10
    assert batch(api, frame).status_code == 200
    page = api.get(f"/mlalgorithms/{algorithm.pk}/drift")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('class="histogram"') == len(FEATURES) + 1
    assert html.index("<h2>age") < html.index("<h2>workclass")  # flagged first
    assert "drifts:" in html and "32561 rows" in html


def test_metrics_show_each_serving_versions_drift(
    registry: MLRegistry, train_csv: bytes, test_split: pd.DataFrame, api: APIClient
) -> None:
    forest(registry, train_csv)
    frame = test_split.head(1000).copy()
    frame["age"] += 10
    assert batch(api, frame).status_code == 200
    text = api.get("/metrics").content.decode()
    version = {"endpoint": "income_classifier", "algorithm": "random forest", "version": "0.0.1"}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted({**version, **labels}.items()))))

    assert value("ml_feature_drifting", feature="age") == 1.0
    assert value("ml_feature_drifting", feature="sex") == 0.0
    wasserstein = value("ml_feature_drift", feature="age", measure="wasserstein")
    limit = value("ml_feature_drift_threshold", feature="age", measure="wasserstein")
    assert wasserstein is not None and limit is not None and wasserstein > limit >= 0.1
    assert value("ml_feature_quality", feature="occupation", share="missing") is not None
    assert value("ml_drift_window_records") == 1000.0
    assert value("ml_drifting_features") is not None


def test_a_warm_worker_monitors_without_a_query_of_its_own(
    registry: MLRegistry, train_csv: bytes, settings: Any, django_assert_num_queries: Any
) -> None:
    """The current reference comes with the cached selection of the version, and its
    profile is read once per process: a warm prediction is still the log's INSERT alone."""
    from apps.endpoints.serving import predict as serving

    settings.PREDICT_CACHE_SECONDS = 60
    forest(registry, train_csv)
    record = {"age": 39, "workclass": "State-gov", "hours-per-week": 40}
    serving.predict(endpoint_name="income_classifier", records=[record], status="production")
    with django_assert_num_queries(1):
        serving.predict(endpoint_name="income_classifier", records=[record], status="production")
    assert window.codes(DriftReference.objects.get().pk, 10, len(FEATURES) + 1).shape == (
        2,
        len(FEATURES) + 1,
    )


def test_records_are_coded_together_when_taken_as_each_would_be_alone(
    registry: MLRegistry, train_csv: bytes, test_split: pd.DataFrame
) -> None:
    """The request path only keeps a batch's columns; the buffer codes consecutive batches
    in one call when it is taken: the codes are those each batch would have alone, in
    order, with a refused batch's codes between them where it came."""
    from apps.endpoints.models import MLAlgorithm as Algorithm
    from apps.ml import codecs, drift
    from apps.ml.registry import get_registry

    algorithm = forest(registry, train_csv)
    algorithm = Algorithm.objects.get(pk=algorithm.pk)
    runtime = get_registry().get(algorithm)
    profile = references.current(algorithm)
    assert profile is not None
    frames, expected = [], []
    for start in (0, 1, 3):
        rows = test_split[FEATURES].iloc[start : start + 1 + start]
        cells = {c: ["" if v != v else str(v) for v in rows[c]] for c in FEATURES}
        frame = codecs.frame_from_text(cells, runtime.signature)
        labels = runtime.predict(frame).labels
        assert labels is not None
        frames.append((frame, {"label": labels}))
        expected.append(drift.encode(profile.profile, frame.columns, {"label": labels}))
    window.record(algorithm, *frames[0])
    window.record(algorithm, *frames[1])
    refused_frame = frames[2][0]
    window.refused(algorithm, refused_frame, [(0, "age", codecs.TYPE)])
    refused_codes = drift.encode(profile.profile, refused_frame.columns, None)
    refused_codes[0, profile.profile.index("age")] = drift.INVALID
    window.record(algorithm, *frames[2])
    columns = len(profile.profile.features)
    seen = window.codes(profile.reference_id, 100, columns)
    wanted = np.concatenate([expected[0], expected[1], refused_codes, expected[2]])
    assert seen.shape == wanted.shape and (seen == wanted).all()
