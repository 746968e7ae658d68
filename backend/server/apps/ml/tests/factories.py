"""Tiny models for tests: trained in a second on a sample of adult.data, never committed."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from sklearn.ensemble import RandomForestClassifier

from adult import load_split  # research/adult.py (on pytest's pythonpath)
from apps.ml import artifacts
from apps.ml.income_classifier import schema
from apps.ml.income_classifier.base import make_bundle
from apps.ml.income_classifier.preprocessing import Preprocessing

SAMPLE_RECORD: dict[str, Any] = {
    "age": 37,
    "workclass": "Private",
    "fnlwgt": 34146,
    "education": "HS-grad",
    "education-num": 9,
    "marital-status": "Married-civ-spouse",
    "occupation": "Craft-repair",
    "relationship": "Husband",
    "race": "White",
    "sex": "Male",
    "capital-gain": 0,
    "capital-loss": 0,
    "hours-per-week": 68,
    "native-country": "United-States",
}


@cache
def adult_frame(split: str = "adult.data") -> pd.DataFrame:
    return load_split(split)


def train_tiny_artifact(
    folder: Path,
    file_name: str = "tiny.joblib",
    *,
    rows: int = 3000,
    seed: int = 0,
    exclude: Mapping[str, str] | None = None,
    estimator: Any = None,
    sample_rows: int = 0,
) -> tuple[Path, str]:
    """Train a small forest on ``rows`` rows of adult.data (without rows whose feature has
    the value in ``exclude``), save it as a bundle in ``folder``; returns (path, sha256)."""
    frame = adult_frame()
    for feature, value in (exclude or {}).items():
        frame = frame[frame[feature] != value]
    frame = frame.sample(n=rows, random_state=seed)
    preprocessing = Preprocessing.fit(frame)
    model = estimator or RandomForestClassifier(n_estimators=5, max_depth=6, random_state=seed)
    y = (frame[schema.LABEL] == schema.POSITIVE_LABEL).to_numpy(dtype=int)
    matrix = preprocessing.encode_frame(frame)
    model.fit(matrix, y)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    sample = matrix[:sample_rows] if sample_rows else None
    joblib.dump(make_bundle(model, preprocessing, metrics={"rows": rows}, sample=sample), path)
    return path, artifacts.sha256_of(path)
