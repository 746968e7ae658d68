"""Artifacts load only from the configured folder and only with the recorded hash."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import skops.io

from apps.core.errors import ModelRejected, ModelUnavailable, PayloadTooLarge
from apps.ml import artifacts
from apps.ml.income_classifier import IncomeClassifier
from apps.ml.tests import models


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


def zip_of(*sizes: int) -> bytes:
    """A zip of members of ``sizes`` bytes of zeros, deflated (a few bytes each on disk)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index, size in enumerate(sizes):
            archive.writestr(f"m{index}.npy", bytes(size))
    return out.getvalue()


def test_the_unpacked_limit_counts_every_member_together() -> None:
    artifacts.check_unpacked(zip_of(600, 400), limit=1000)  # exactly the limit: taken
    with pytest.raises(PayloadTooLarge, match="unpacks to 1001 bytes") as refused:
        artifacts.check_unpacked(zip_of(600, 401), limit=1000)  # each member alone is under
    assert refused.value.details == {"unpacked_bytes": 1001, "limit": 1000}


def test_a_file_that_is_not_a_zip_is_rejected_as_not_skops() -> None:
    with pytest.raises(ModelRejected, match=r"not a readable \.skops file"):
        artifacts.check_unpacked(b"not a zip at all", limit=1000)


def test_a_model_within_the_unpacked_limit_loads(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    skops.io.dump(models.wine_classifier(), buffer)
    data = buffer.getvalue()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        total = sum(info.file_size for info in archive.infolist())
    assert artifacts.load_skops(data, (), max_unpacked=total) is not None
    with pytest.raises(PayloadTooLarge):
        artifacts.load_skops(data, (), max_unpacked=total - 1)
