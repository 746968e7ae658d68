"""The shipped copy of the Adult data is checked against its SHA256SUMS."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adult import DATA_DIR, DataIntegrityError, load_split, verify_hashes


def test_the_shipped_data_matches_its_hashes() -> None:
    assert set(verify_hashes()) == {"adult.data", "adult.names", "adult.test"}


def test_a_changed_file_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "adult"
    shutil.copytree(DATA_DIR, copy)
    data = copy / "adult.data"
    data.chmod(0o644)
    data.write_bytes(data.read_bytes().replace(b"State-gov", b"State-gob", 1))
    with pytest.raises(DataIntegrityError, match=r"adult\.data"):
        verify_hashes(copy)


def test_the_official_splits_load_with_normalised_labels() -> None:
    train, test = load_split("adult.data"), load_split("adult.test")
    assert (len(train), len(test)) == (32561, 16281)
    assert set(train["income"]) == set(test["income"]) == {"<=50K", ">50K"}
    assert train["workclass"].isna().sum() == 1836  # "?" read as missing
