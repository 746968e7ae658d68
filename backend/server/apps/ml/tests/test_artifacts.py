"""Artifacts load only from the configured folder and only with the recorded hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.core.errors import ModelUnavailable
from apps.ml import artifacts
from apps.ml.income_classifier import IncomeClassifier


def test_it_loads_an_artifact_whose_hash_matches(tiny_artifacts: Path) -> None:
    sha = artifacts.sha256_of(tiny_artifacts / "random_forest.joblib")
    wrapper = IncomeClassifier.from_artifact(tiny_artifacts, "random_forest.joblib", sha256=sha)
    assert wrapper.artifact_sha256 == sha
    assert wrapper.features == tuple(wrapper.preprocessing.features)


def test_it_refuses_a_tampered_artifact_before_unpickling(artifacts_dir: Path) -> None:
    path = artifacts_dir / "random_forest.joblib"
    sha = artifacts.sha256_of(path)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelUnavailable, match="does not match its recorded sha256"):
        IncomeClassifier.from_artifact(artifacts_dir, "random_forest.joblib", sha256=sha)


@pytest.mark.parametrize("name", ["../outside.joblib", "/etc/passwd", "a/../../b.joblib"])
def test_it_refuses_paths_outside_the_artifacts_folder(tmp_path: Path, name: str) -> None:
    root = tmp_path / "artifacts"
    root.mkdir()
    (tmp_path / "outside.joblib").write_bytes(b"x")
    with pytest.raises(ModelUnavailable, match="outside the artifacts folder"):
        artifacts.load_verified(root, name, None)


def test_a_missing_artifact_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="cannot be read"):
        artifacts.load_verified(tmp_path, "missing.joblib", "0" * 64)


def test_a_file_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    import joblib

    joblib.dump({"just": "a dict"}, tmp_path / "other.joblib")
    with pytest.raises(ModelUnavailable, match="not an income classifier bundle"):
        IncomeClassifier.from_artifact(tmp_path, "other.joblib")
