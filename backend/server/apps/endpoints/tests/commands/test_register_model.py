"""``manage.py register_model``: any fitted model file as a new version of an endpoint,
checked before anything is recorded, refused when it is a duplicate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from django.core.management import CommandError, call_command, load_command_class
from sklearn.tree import DecisionTreeClassifier

from apps.endpoints.models import MLAlgorithm
from apps.endpoints.serving.predict import predict
from apps.ml import artifacts
from apps.ml.registry import MLRegistry
from apps.ml.tests import models
from apps.ml.tests.factories import SAMPLE_RECORD, train_tiny_artifact

pytestmark = pytest.mark.django_db


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    """An Adult bundle trained outside the artifacts folder."""
    path, _ = train_tiny_artifact(
        tmp_path / "elsewhere",
        "logistic.joblib",
        estimator=DecisionTreeClassifier(max_depth=4, random_state=0),
    )
    return path


def register(path: Path, *extra: str, version: str = "1.0.0") -> None:
    call_command(
        "register_model",
        str(path),
        "--endpoint",
        "income_classifier",
        "--name",
        "logistic",
        "--version",
        version,
        "--description",
        "a single tree",
        "--owner",
        "ana",
        *extra,
    )


def test_it_copies_the_artifact_and_records_hash_version_and_card(
    registry: MLRegistry, artifacts_dir: Path, trained: Path
) -> None:
    register(trained, "--status", "staging")
    algorithm = MLAlgorithm.objects.get(name="logistic")
    copy = artifacts_dir / "logistic.joblib"
    assert copy.read_bytes() == trained.read_bytes()
    assert algorithm.artifact == "logistic.joblib"
    assert algorithm.artifact_sha256 == artifacts.sha256_of(trained)
    assert algorithm.wrapper == "income_classifier" and algorithm.sklearn_version
    age, workclass = algorithm.features[0], algorithm.features[1]
    assert (age["name"], age["type"], age["required"]) == ("age", "number", False)
    assert workclass["type"] == "category" and "Private" in workclass["categories"]
    assert algorithm.task == "classification" and algorithm.classes == ["<=50K", ">50K"]
    assert algorithm.outputs == ["label", "probability", "probabilities", "status", "imputed"]
    assert algorithm.metrics == {"rows": 3000}
    assert algorithm.owner == "ana" and algorithm.description == "a single tree"
    assert algorithm.statuses.get(active=True).status == "staging"


def test_the_registered_version_serves_predictions_in_this_process(
    registry: MLRegistry, trained: Path
) -> None:
    register(trained)  # default status: testing
    [served] = predict(endpoint_name="income_classifier", records=[SAMPLE_RECORD], status="testing")
    assert served["algorithm"]["name"] == "logistic"
    assert 0.0 <= served["probability"] <= 1.0


def test_any_fitted_pipeline_registers_with_its_example_and_serves_on_a_new_endpoint(
    registry: MLRegistry, artifacts_dir: Path, tmp_path: Path
) -> None:
    model = models.wine_classifier()
    x, y = models.wine()
    path = models.save(model, tmp_path / "ds", "wine.skops")
    example = tmp_path / "ds" / "example.csv"
    example.write_bytes(models.example_csv(x, y, rows=8))
    call_command(
        "register_model", str(path), "--endpoint", "wine", "--name", "lr", "--version", "1",
        "--input-example", str(example), "--target-column", "target", "--status", "production",
    )  # fmt: skip
    algorithm = MLAlgorithm.objects.get(parent_endpoint__name="wine")
    assert algorithm.wrapper == "sklearn" and algorithm.artifact == "wine.skops"
    assert [f["name"] for f in algorithm.features] == list(x.columns)
    assert all(f["type"] == "number" and f["required"] for f in algorithm.features)
    assert algorithm.classes == ["barbera", "barolo", "grignolino"]
    assert algorithm.target_column == "target" and len(algorithm.example) == 5
    records = x.head(10).to_dict(orient="records")
    served = predict(endpoint_name="wine", records=records, status="production")
    assert [s["label"] for s in served] == model.predict(x.head(10)).tolist()
    expected = model.predict_proba(x.head(10))
    got = np.array([[s["probabilities"][c] for c in algorithm.classes] for s in served])
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_an_adult_bundle_fitted_on_the_label_text_registers_and_predicts(
    registry: MLRegistry, tmp_path: Path
) -> None:
    # Found in review: base.py looked for classes_ == 1, an IndexError with text labels
    # (and the copied file stayed behind).
    import pandas as pd

    from apps.ml.tests.factories import adult_frame

    frame = adult_frame().sample(n=2000, random_state=3)
    path, _ = train_tiny_artifact(tmp_path / "text", "text_labels.joblib")
    bundle = joblib.load(path)
    bundle["estimator"].fit(_matrix(bundle, frame), frame["income"].to_numpy())
    joblib.dump(bundle, path)
    register(path)
    [served] = predict(endpoint_name="income_classifier", records=[SAMPLE_RECORD], status="testing")
    expected = bundle["estimator"].predict(_matrix(bundle, pd.DataFrame([SAMPLE_RECORD])))[0]
    assert served["label"] == expected


def _matrix(bundle: dict[str, Any], frame: Any) -> Any:
    from apps.ml.income_classifier.preprocessing import Preprocessing

    return Preprocessing.from_dict(bundle["preprocessing"]).encode_frame(frame)


def test_a_model_that_fails_on_its_example_is_refused_and_leaves_nothing_behind(
    registry: MLRegistry, artifacts_dir: Path, tmp_path: Path
) -> None:
    model = models.wine_classifier()
    path = models.save(model, tmp_path / "ds", "wine.joblib")
    example = tmp_path / "ds" / "bad.csv"
    x, _ = models.wine()
    bad = x.head(3).copy()
    bad["alcohol"] = ["a lot", "more", "most"]  # the pipeline cannot take text here
    example.write_bytes(bad.to_csv(index=False).encode())
    with pytest.raises(CommandError, match="does not predict on input example"):
        call_command(
            "register_model", str(path), "--endpoint", "wine", "--name", "lr", "--version", "1",
            "--input-example", str(example),
        )  # fmt: skip
    assert not (artifacts_dir / "wine.joblib").exists()
    assert not list(artifacts_dir.glob("wine.joblib*"))
    assert MLAlgorithm.objects.count() == 0


def test_it_refuses_a_duplicate_name_and_version(
    registry: MLRegistry, trained: Path, tmp_path: Path
) -> None:
    register(trained)
    other, _ = train_tiny_artifact(tmp_path / "other", "logistic_v2.joblib", seed=7)
    with pytest.raises(CommandError, match=r"already 'logistic' version '1\.0\.0'"):
        register(other)
    assert MLAlgorithm.objects.count() == 1
    assert not (registry.artifacts_root / "logistic_v2.joblib").exists()


def test_a_refused_duplicate_exits_non_zero_with_the_message(
    registry: MLRegistry, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register(trained)
    command = load_command_class("apps.endpoints", "register_model")
    argv = [
        "manage.py", "register_model", str(trained), "--endpoint", "income_classifier",
        "--name", "logistic", "--version", "1.0.0",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        command.run_from_argv(argv)  # what manage.py does
    assert exited.value.code == 1
    assert "already 'logistic' version '1.0.0'" in capsys.readouterr().err


def test_it_never_overwrites_a_different_file_of_the_same_name(
    registry: MLRegistry, artifacts_dir: Path, tmp_path: Path
) -> None:
    different, _ = train_tiny_artifact(tmp_path / "new", "random_forest.joblib", seed=9)
    before = (artifacts_dir / "random_forest.joblib").read_bytes()
    with pytest.raises(CommandError, match=r"different file named 'random_forest\.joblib'"):
        register(different)
    assert (artifacts_dir / "random_forest.joblib").read_bytes() == before
    register(different, "--artifact-name", "random_forest_v2.joblib")
    assert MLAlgorithm.objects.get().artifact == "random_forest_v2.joblib"


def test_it_refuses_a_file_that_is_not_a_model_and_leaves_nothing_behind(
    registry: MLRegistry, artifacts_dir: Path, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.joblib"
    joblib.dump({"not": "a model"}, junk)
    with pytest.raises(CommandError, match=r"no predict\(\): not a model"):
        register(junk)
    assert not (artifacts_dir / "junk.joblib").exists()
    assert MLAlgorithm.objects.count() == 0


def test_it_refuses_a_skops_file_that_unpacks_past_the_limit_and_leaves_nothing_behind(
    registry: MLRegistry, artifacts_dir: Path, tmp_path: Path, settings: Any
) -> None:
    settings.MODEL_MAX_UNPACKED_BYTES = 1024 * 1024
    bomb = tmp_path / "bomb.skops"
    bomb.write_bytes(models.skops_bomb(models.wine_classifier(), 8 * 1024 * 1024))
    with pytest.raises(CommandError, match="MODEL_MAX_UNPACKED_BYTES"):
        call_command(
            "register_model", str(bomb), "--endpoint", "wine", "--name", "lr", "--version", "1",
        )  # fmt: skip
    assert not (artifacts_dir / "bomb.skops").exists()
    assert MLAlgorithm.objects.count() == 0


def test_it_refuses_an_artifact_name_outside_the_artifacts_folder(
    registry: MLRegistry, trained: Path
) -> None:
    with pytest.raises(CommandError, match="outside the artifacts folder"):
        register(trained, "--artifact-name", "../escape.joblib")


def test_it_warns_when_the_status_is_already_taken_on_the_endpoint(
    registry: MLRegistry, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from apps.endpoints.tests.factories import algorithm

    algorithm(registry, status="production")
    register(trained, "--status", "production")
    assert "ambiguous_algorithm" in capsys.readouterr().err
