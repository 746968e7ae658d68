"""``manage.py register_model``: a new version from a file, refused when it is a duplicate."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command, load_command_class
from sklearn.tree import DecisionTreeClassifier

from apps.endpoints.models import MLAlgorithm
from apps.endpoints.services import predict
from apps.ml import artifacts
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD, train_tiny_artifact

pytestmark = pytest.mark.django_db


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    """A model trained outside the artifacts folder, as a data scientist hands it over."""
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
    assert algorithm.features[0] == {"name": "age", "type": "number"}
    assert {"name": "workclass", "type": "category"} in algorithm.features
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


def test_it_refuses_a_duplicate_name_and_version(
    registry: MLRegistry, trained: Path, tmp_path: Path
) -> None:
    register(trained)
    other, _ = train_tiny_artifact(tmp_path / "other", "logistic_v2.joblib", seed=7)
    with pytest.raises(CommandError, match=r"already 'logistic' version '1\.0\.0'.*--version"):
        register(other)
    assert MLAlgorithm.objects.count() == 1


def test_a_refused_duplicate_exits_non_zero_with_the_message(
    registry: MLRegistry, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register(trained)
    command = load_command_class("apps.ml", "register_model")
    argv = ["manage.py", "register_model", str(trained), "--name", "logistic", "--version", "1.0.0"]
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


def test_it_refuses_a_file_that_is_not_a_model_bundle_and_leaves_nothing_behind(
    registry: MLRegistry, artifacts_dir: Path, tmp_path: Path
) -> None:
    import joblib

    junk = tmp_path / "junk.joblib"
    joblib.dump({"not": "a bundle"}, junk)
    with pytest.raises(CommandError, match="not an income classifier bundle"):
        register(junk)
    assert not (artifacts_dir / "junk.joblib").exists()
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
