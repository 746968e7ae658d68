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
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np

from apps.endpoints.errors import InvalidInput
from apps.ml.income_classifier import schema

if TYPE_CHECKING:  # pandas is imported where a frame is actually handled
    import pandas as pd

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
        import pandas as pd  # here: serving single records never needs pandas

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

    def encode_columns(
        self, columns: Mapping[str, Sequence[str]], *, first_line: int = 2
    ) -> tuple[np.ndarray, np.ndarray]:
        """Validation and encoding of text columns (the cells of a CSV file), column by
        column with fast paths for clean data.

        Returns the matrix and a boolean matrix of the cells filled with the training mode.
        Cells are handled exactly as ``encode_records`` handles JSON strings (surrounding
        spaces ignored; the fast path looks cells up as they are). Bad cells raise
        ``InvalidInput`` naming their line (``first_line`` is the line of row 0) and column.
        """
        n = len(next(iter(columns.values()))) if columns else 0
        matrix = np.empty((n, len(self.features)), dtype=np.float64)
        filled = np.zeros((n, len(self.features)), dtype=bool)
        problems: list[dict[str, Any]] = []
        for j, name in enumerate(self.features):
            cells = columns[name]
            if name in self._codes:
                values, unseen, bad = self._category_column(name, cells)
            else:
                values, unseen, bad = _number_column(cells)
            for i in bad[:10]:
                shown = cells[i].strip()[:40]
                problems.append({"line": first_line + i, "column": name, "value": shown})
            filled[:, j] = unseen
            matrix[:, j] = np.where(unseen, self._fill_row[j], values)
        if problems:
            problems.sort(key=lambda p: p["line"])
            first = problems[0]
            kind = "category" if first["column"] in self._codes else "number"
            raise InvalidInput(
                f"Line {first['line']}, column '{first['column']}': '{first['value']}' is not "
                f"a valid {kind}.",
                details={"cells": problems[:10]},
            )
        return matrix, filled

    def _category_column(
        self, name: str, cells: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        lookup = self._codes[name]
        codes = np.fromiter(map(lookup.get, cells, repeat(-1)), np.float64, len(cells))
        domain = schema.CATEGORY_DOMAINS.get(name, ())
        bad = []
        for i in np.flatnonzero(codes < 0).tolist():  # misses only: spaces, gaps, typos
            text = cells[i].strip()
            codes[i] = lookup.get(text, -1)
            if codes[i] < 0 and text not in _MISSING_STRINGS and text not in domain:
                bad.append(i)
        return codes, codes < 0, bad

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
            filled: list[str] = []
            row_errors = self._encode_record(record, matrix[i], filled)
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


def _number_column(cells: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    try:  # the common case: every cell a number, parsed in one C loop
        numbers = np.array(cells, dtype=np.float64)
    except ValueError:
        numbers = np.array([_float_or_nan(cell) for cell in cells], dtype=np.float64)
    unseen = ~np.isfinite(numbers)
    bad = [i for i in np.flatnonzero(unseen).tolist() if cells[i].strip() not in _MISSING_STRINGS]
    return numbers, unseen, bad


def _float_or_nan(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return math.nan


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
