"""Turning Adult records into the numeric matrix a tree ensemble was trained on.

Fitted once in training and stored inside the artifact as plain lists and dicts, so serving
uses exactly the encoding the model learned with. Two entry points share one encoding:

- ``encode_frame``: vectorised, for training and for whole files;
- ``encode_records``: for JSON records, validating each value and naming the field that is
  wrong. It is a handful of dict lookups per record, no DataFrame, because a single
  prediction must not cost more in preprocessing than in the model.

Missing values (absent, null, empty or "?") are filled with the training mode of the column.
A category that belongs to the feature's domain (``schema.CATEGORY_DOMAINS``) but that this
model never saw in training is treated the same way and reported in ``imputed``; a value
outside the domain is a client error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np

from apps.ml import codecs
from apps.ml.codecs import Frame
from apps.ml.income_classifier import schema
from apps.ml.signature import CLASSIFICATION, Feature, Signature, outputs_for

if TYPE_CHECKING:  # pandas is imported where a frame is actually handled
    import pandas as pd

_MISSING_TEXTS = ("", schema.MISSING_MARKER)


@dataclass(frozen=True)
class Preprocessing:
    features: tuple[str, ...]
    categories: Mapping[str, tuple[str, ...]]
    fill_values: Mapping[str, float | str]
    # Derived lookup tables, built once at load: category -> code, per feature.
    _codes: Mapping[str, Mapping[str, int]] = field(init=False, repr=False, compare=False)
    _fill_row: np.ndarray = field(init=False, repr=False, compare=False)
    _signature: Signature = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        codes = {f: {c: i for i, c in enumerate(cats)} for f, cats in self.categories.items()}
        object.__setattr__(self, "_codes", codes)
        fill_row = np.array([self._encode_known(f, self.fill_values[f]) for f in self.features])
        object.__setattr__(self, "_fill_row", fill_row)
        object.__setattr__(self, "_signature", self._adult_signature())

    # -- fitting and storage -------------------------------------------------------------

    @classmethod
    def fit(cls, frame: pd.DataFrame, features: Sequence[str] = schema.FEATURES) -> Preprocessing:
        """Learn category codes and fill values from a training frame (missing values NaN)."""
        categories: dict[str, tuple[str, ...]] = {}
        fill_values: dict[str, float | str] = {}
        for name in features:
            column = frame[name]
            mode = column.mode(dropna=True)
            if name in schema.CATEGORY_DOMAINS:
                categories[name] = tuple(sorted(column.dropna().astype(str).unique()))
                fill_values[name] = str(mode.iloc[0])
            else:
                fill_values[name] = float(mode.iloc[0])
        return cls(features=tuple(features), categories=categories, fill_values=fill_values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "categories": {k: list(v) for k, v in self.categories.items()},
            "fill_values": dict(self.fill_values),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        return cls(
            features=tuple(data["features"]),
            categories={k: tuple(v) for k, v in data["categories"].items()},
            fill_values=dict(data["fill_values"]),
        )

    def feature_types(self) -> dict[str, str]:
        return {f: ("category" if f in self.categories else "number") for f in self.features}

    # -- encoding ------------------------------------------------------------------------

    def _encode_known(self, name: str, value: float | str) -> float:
        if name in self._codes:
            return float(self._codes[name][str(value)])
        return float(value)

    def encode_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Vectorised encoding of a frame whose missing values are NaN (training, files)."""
        import pandas as pd  # here: serving single records never needs pandas

        matrix = np.empty((len(frame), len(self.features)), dtype=np.float64)
        for j, name in enumerate(self.features):
            column = frame[name]
            if name in self.categories:
                known = column.where(column.isin(self.categories[name]))  # others: missing
                codes = pd.Categorical(known, categories=self.categories[name]).codes
                matrix[:, j] = np.where(codes < 0, self._fill_row[j], codes)
            else:
                values = pd.to_numeric(column).to_numpy(dtype=np.float64, na_value=np.nan)
                matrix[:, j] = np.where(np.isnan(values), self._fill_row[j], values)
        return matrix

    def encode(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        """The matrix of a checked ``Frame`` (``codecs``: the values are valid for the
        Adult signature), and a boolean matrix of the cells filled with the training mode:
        missing ones, and categories of the domain this model never saw in training."""
        if frame.rows == 1:
            return self._encode_one(frame)
        matrix = np.empty((frame.rows, len(self.features)), dtype=np.float64)
        filled = np.empty((frame.rows, len(self.features)), dtype=bool)
        for j, name in enumerate(self.features):
            column = frame.columns[name]
            if name in self._codes:
                lookup = self._codes[name]
                values = np.fromiter(map(lookup.get, column, repeat(-1)), np.float64, frame.rows)
                unseen = values < 0  # missing (None) or unseen in training
            else:
                values = np.asarray(column, dtype=np.float64)
                unseen = np.isnan(values)
            filled[:, j] = unseen
            matrix[:, j] = np.where(unseen, self._fill_row[j], values)
        return matrix, filled

    def _encode_one(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        """``encode`` for a single prediction: the same answer, cell by cell in Python.
        Three numpy calls per column were most of a one-row encoding (8.5 % of a worker's
        time holding the GIL under load, py-spy)."""
        values: list[float] = []
        unseen: list[bool] = []
        for j, name in enumerate(self.features):
            cell = frame.columns[name][0]
            if name in self._codes:
                value = float(self._codes[name].get(cell, -1))
                missing = value < 0  # missing (None) or unseen in training
            else:
                value = float(cell)
                missing = value != value  # NaN
            unseen.append(missing)
            values.append(float(self._fill_row[j]) if missing else value)
        return np.array([values], dtype=np.float64), np.array([unseen], dtype=bool)

    def encode_records(self, records: Sequence[Any]) -> tuple[np.ndarray, list[list[str]]]:
        """Check and encode JSON records (``codecs.frame_from_records``); returns the
        matrix and, per record, the features filled with the training mode."""
        matrix, filled = self.encode(codecs.frame_from_records(records, self.signature()))
        return matrix, self.imputed(filled)

    def imputed(self, filled: np.ndarray) -> list[list[str]]:
        """Per row, the names of its filled features (most rows have none)."""
        out: list[list[str]] = [[] for _ in range(len(filled))]
        for i, j in zip(*np.nonzero(filled), strict=True):
            out[int(i)].append(self.features[int(j)])
        return out

    def signature(self) -> Signature:
        return self._signature

    def _adult_signature(self) -> Signature:
        """The Adult signature over this model's features: every feature optional (filled
        with the training mode), "?" and "" missing as in the raw files, categories checked
        against their ``adult.names`` domain."""
        features = tuple(
            Feature(
                name=name,
                type="category" if name in self.categories else "number",
                required=False,
                categories=schema.CATEGORY_DOMAINS.get(name, self.categories.get(name)),
                missing=_MISSING_TEXTS,
            )
            for name in self.features
        )
        outputs = outputs_for(CLASSIFICATION, schema.CLASSES, probabilities=True, imputed=True)
        return Signature(features, CLASSIFICATION, schema.CLASSES, outputs)
