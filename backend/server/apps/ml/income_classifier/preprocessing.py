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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from apps.endpoints.errors import InvalidInput
from apps.ml.income_classifier import schema

_MISSING_STRINGS = frozenset({"", schema.MISSING_MARKER})


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, str) and value.strip() in _MISSING_STRINGS


@dataclass(frozen=True)
class Preprocessing:
    features: tuple[str, ...]
    categories: Mapping[str, tuple[str, ...]]
    fill_values: Mapping[str, float | str]
    # Derived lookup tables, built once at load: category -> code, per feature.
    _codes: Mapping[str, Mapping[str, int]] = field(init=False, repr=False, compare=False)
    _fill_row: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        codes = {f: {c: i for i, c in enumerate(cats)} for f, cats in self.categories.items()}
        object.__setattr__(self, "_codes", codes)
        fill_row = np.array([self._encode_known(f, self.fill_values[f]) for f in self.features])
        object.__setattr__(self, "_fill_row", fill_row)

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
        matrix = np.empty((len(frame), len(self.features)), dtype=np.float64)
        for j, name in enumerate(self.features):
            column = frame[name]
            if name in self.categories:
                codes = pd.Categorical(column, categories=self.categories[name]).codes
                matrix[:, j] = np.where(codes < 0, self._fill_row[j], codes)
            else:
                values = pd.to_numeric(column).to_numpy(dtype=np.float64, na_value=np.nan)
                matrix[:, j] = np.where(np.isnan(values), self._fill_row[j], values)
        return matrix

    def encode_records(
        self, records: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Validate and encode JSON records; returns the matrix and, per record, the features
        that were filled with the training mode. Raises ``InvalidInput`` naming every bad
        field (prefixed by the record's position when there is more than one record)."""
        matrix = np.tile(self._fill_row, (len(records), 1))
        imputed: list[list[str]] = []
        errors: dict[str, Any] = {}
        for i, record in enumerate(records):
            row_errors = self._encode_record(record, matrix[i], filled := [])
            imputed.append(filled)
            if row_errors:
                errors.update(row_errors if len(records) == 1 else {f"{i}": row_errors})
        if errors:
            raise InvalidInput("Some features are not valid; see details.", details=errors)
        return matrix, imputed

    def _encode_record(
        self, record: Any, row: np.ndarray, filled: list[str]
    ) -> dict[str, list[str]]:
        if not isinstance(record, Mapping):
            return {"non_field_errors": ["Expected an object of feature names and values."]}
        errors: dict[str, list[str]] = {}
        unknown = [key for key in record if key not in self.fill_values]
        for key in unknown:
            errors[str(key)] = [f"Unknown feature. Expected: {', '.join(self.features)}."]
        for j, name in enumerate(self.features):
            value = record.get(name)
            if _is_missing(value):
                filled.append(name)
                continue
            try:
                if name in self._codes:
                    code = self._category_code(name, value)
                    if code is None:
                        filled.append(name)
                    else:
                        row[j] = code
                else:
                    row[j] = _to_number(value)
            except ValueError as exc:
                errors[name] = [str(exc)]
        return errors

    def _category_code(self, name: str, value: Any) -> int | None:
        if not isinstance(value, str):
            raise ValueError(f"A string is required, got {type(value).__name__}.")
        text = value.strip()
        code = self._codes[name].get(text)
        if code is not None:
            return code
        domain = schema.CATEGORY_DOMAINS.get(name, ())
        if text in domain:
            return None  # valid, but unseen in training: filled with the mode
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ValueError(f"'{shown}' is not a valid {name}. Valid: {', '.join(domain)}.")


def _to_number(value: Any) -> float:
    # bool is an int in Python; JSON true for an age is a client bug, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"A number is required, got {type(value).__name__}.")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        text = str(value)
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ValueError(f"A number is required, got '{shown}'.") from None
    if not math.isfinite(number):
        raise ValueError("A finite number is required.")
    return number
