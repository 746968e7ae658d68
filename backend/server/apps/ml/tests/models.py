"""Real models of every task, trained in the test on data sets scikit-learn ships (no
network), and saved as a data scientist saves them: nothing here imports the project."""

from __future__ import annotations

import io
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


@cache
def wine() -> tuple[pd.DataFrame, np.ndarray]:
    """The wine data with class names as labels (a multiclass task, string labels)."""
    data = load_wine(as_frame=True)
    names = np.array(["barolo", "grignolino", "barbera"])
    return data.data, names[data.target.to_numpy()]


@cache
def diabetes() -> tuple[pd.DataFrame, np.ndarray]:
    data = load_diabetes(as_frame=True)
    return data.data, data.target.to_numpy()


@cache
def cancer() -> tuple[pd.DataFrame, np.ndarray]:
    """Breast cancer, binary, labels 0 and 1."""
    data = load_breast_cancer(as_frame=True)
    return data.data, data.target.to_numpy()


def wine_classifier() -> Pipeline:
    """Scaling and logistic regression: skl2onnx converts it."""
    x, y = wine()
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)


def diabetes_regressor() -> Pipeline:
    x, y = diabetes()
    return make_pipeline(StandardScaler(), GradientBoostingRegressor(random_state=0)).fit(x, y)


def ridge_on_arrays() -> Ridge:
    """A regressor fitted on a plain array: no feature names, features x0..x9."""
    x, y = diabetes()
    return Ridge().fit(x.to_numpy(), y)


def cancer_classifier() -> Pipeline:
    x, y = cancer()
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)


@cache
def mixed_frame() -> tuple[pd.DataFrame, np.ndarray]:
    """Wine with a colour (a category), a flag (a boolean) and gaps in one number."""
    x, y = wine()
    frame = x[["alcohol", "malic_acid", "color_intensity", "hue"]].copy()
    frame["colour"] = np.where(y == "barolo", "red", np.where(y == "barbera", "rose", "white"))
    frame.loc[frame.index % 7 == 0, "colour"] = "white"  # not a giveaway
    frame["organic"] = (frame.index % 3 == 0).astype(bool)
    frame.loc[frame.index % 11 == 0, "hue"] = np.nan  # an optional feature
    return frame, y


def mixed_classifier(handle_unknown: str = "error") -> Pipeline:
    """A ColumnTransformer with an imputer and a one-hot encoder, then a forest."""
    frame, y = mixed_frame()
    numbers = ["alcohol", "malic_acid", "color_intensity", "hue"]
    columns = ColumnTransformer(
        [
            ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), numbers),
            ("colour", OneHotEncoder(handle_unknown=handle_unknown), ["colour"]),
            ("organic", "passthrough", ["organic"]),
        ]
    )
    model = make_pipeline(columns, RandomForestClassifier(n_estimators=10, random_state=0))
    return model.fit(frame, y)


def save(model: Any, folder: Path, name: str) -> Path:
    """``name`` ending in .skops: skops.io.dump; else joblib.dump."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if name.endswith(".skops"):
        import skops.io

        skops.io.dump(model, path)
    else:
        joblib.dump(model, path)
    return path


def skops_bomb(model: Any, inflated: int) -> bytes:
    """``model`` as a .skops file whose largest array is swapped for ``inflated`` bytes of
    zeros, deflated: a zip bomb a few KB on disk, as one the service was sent (a member
    that unpacked to 1.6 GB). skops reads the member when it checks the file's types."""
    import skops.io

    buffer = io.BytesIO()
    skops.io.dump(model, buffer)
    with zipfile.ZipFile(buffer) as original:
        members = {info.filename: original.read(info) for info in original.infolist()}
    largest = max(
        (name for name in members if name.endswith(".npy")), key=lambda n: len(members[n])
    )
    zeros = io.BytesIO()
    np.save(zeros, np.zeros(inflated // 8))
    members[largest] = zeros.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bomb:
        for name, data in members.items():
            bomb.writestr(name, data)
    return out.getvalue()


def example_csv(frame: pd.DataFrame, target: np.ndarray | None = None, rows: int = 20) -> bytes:
    """The first ``rows`` rows as a CSV input example, with a ``target`` column if given."""
    part = frame.head(rows).copy()
    if target is not None:
        part["target"] = target[:rows]
    text: str = part.to_csv(index=False)
    return text.encode()


class Picky(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """A step whose own check refuses input the signature cannot know about: a wine with
    more than 100 % alcohol. Importable, so joblib can pickle a pipeline that holds it."""

    def fit(self, x: Any, y: Any = None) -> Picky:
        return self

    def transform(self, x: Any) -> Any:
        if (np.asarray(x, dtype=float)[:, 0] > 100).any():
            raise ValueError("alcohol over 100 % is not a wine")
        return x


def picky_classifier() -> Pipeline:
    x, y = wine()
    return make_pipeline(Picky(), StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)
