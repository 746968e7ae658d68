"""Requests in, by the signature: JSON records (``frame_from_records``) or the text columns
of a CSV file (``frame_from_text``) become a ``Frame``, every value checked against its
feature: a non-number in a number column, a list or object where a value belongs, NaN or
Infinity, a category the model's encoder would refuse, a missing required feature: each is
an ``InvalidInput`` naming the field (or the line and column of a file), never a model
error. Answers out are ``answer.py``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from apps.core.errors import InvalidInput
from apps.ml.signature import Feature, Signature

if TYPE_CHECKING:  # pandas is imported only where a model needs a DataFrame
    import pandas as pd


# -- in ----------------------------------------------------------------------------------


@dataclass
class Frame:
    """A batch of rows as typed columns, in signature order: float64 for numbers (NaN where
    missing); object arrays for categories, strings and booleans (None where missing).
    Built without pandas, which costs more than a compiled model for one row; ``to_pandas``
    gives a scikit-learn pipeline its DataFrame."""

    columns: dict[str, np.ndarray]
    rows: int
    # All columns side by side, when the frame was built that way (``_numbers_only``).
    matrix: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_pandas(self) -> pd.DataFrame:
        """The columns as a DataFrame; a missing text value is NaN, as pandas reads a gap
        in a CSV file and as scikit-learn's imputers look for it (they pass None on)."""
        import pandas as pd

        if self.columns and all(c.dtype == np.float64 for c in self.columns.values()):
            # All numbers (the common case): one block, three times faster to build than
            # a column each, which one-row predictions feel.
            return pd.DataFrame(self.to_matrix(), columns=list(self.columns))
        columns = {}
        for name, column in self.columns.items():
            gaps = [v is None for v in column.tolist()] if column.dtype == object else []
            if any(gaps):
                column = column.copy()
                column[gaps] = np.nan
            columns[name] = column
        return pd.DataFrame(columns, copy=False)

    def to_matrix(self) -> np.ndarray:
        """All columns side by side as float64 (a model fitted on a plain array)."""
        if self.matrix is not None:
            return self.matrix
        if not self.columns:
            return np.empty((self.rows, 0))
        return np.column_stack([np.asarray(c, dtype=np.float64) for c in self.columns.values()])

    def take(self, rows: np.ndarray) -> Frame:
        return Frame({k: v[rows] for k, v in self.columns.items()}, len(rows))

    def part(self, rows: slice) -> Frame:
        """The consecutive ``rows`` (views, no copy; the matrix too, when there is one)."""
        return Frame(
            {k: v[rows] for k, v in self.columns.items()},
            len(range(*rows.indices(self.rows))),
            None if self.matrix is None else self.matrix[rows],
        )


MAX_SHOWN_VALUES = 40  # allowed values listed in an error, the rest counted

# What was wrong with a refused value, for drift monitoring's data-quality shares.
MISSING = "missing"  # a required feature absent or null
UNSEEN = "unseen"  # a category the model's encoder does not know
TYPE = "type"  # anything else: a string for a number, a list, NaN...


class Refused(ValueError):
    """A value the signature refuses, and which kind of refusal it is."""

    def __init__(self, message: str, kind: str = TYPE) -> None:
        super().__init__(message)
        self.kind = kind


class InvalidCells(InvalidInput):
    """Values the signature refused, with everything that was read: ``frame`` holds every
    row (a refused value as missing) and ``cells`` each refused value's (row, feature,
    kind). Drift monitoring counts them: a refused request is the loudest sign that the
    inputs changed (``apps/endpoints/monitoring``)."""

    def __init__(
        self, message: str, *, details: Any, frame: Frame, cells: list[tuple[int, str, str]]
    ) -> None:
        super().__init__(message, details=details)
        self.frame = frame
        self.cells = cells


def _kind(exc: ValueError) -> str:
    return exc.kind if isinstance(exc, Refused) else TYPE


def frame_from_records(records: Sequence[Any], signature: Signature) -> Frame:
    """Check and convert JSON records. Raises ``InvalidInput`` naming every bad field
    (prefixed by the record's position when there is more than one)."""
    if signature.all_numbers:
        fast = _numbers_only(records, signature)
        if fast is not None:
            return fast
    errors: dict[str, Any] = {}
    cells: list[tuple[int, str, str]] = []
    for i, record in enumerate(records):
        problems = _record_problems(record, signature)
        if problems:
            errors.update(problems if len(records) == 1 else {str(i): problems})
    columns: dict[str, np.ndarray] = {}
    for feature in signature.features:
        values = [r.get(feature.name) if isinstance(r, Mapping) else None for r in records]
        column, bad = _json_column(feature, values)
        for i, message, kind in bad:
            cells.append((i, feature.name, kind))
            where = feature.name if len(records) == 1 else str(i)
            if len(records) == 1:
                errors.setdefault(where, []).append(message)
            else:
                errors.setdefault(where, {}).setdefault(feature.name, []).append(message)
        columns[feature.name] = column
    if errors:
        raise InvalidCells(
            "Some features are not valid; see details.",
            details=errors,
            frame=Frame(columns, len(records)),
            cells=cells,
        )
    return Frame(columns, len(records))


def frame_from_columns(
    columns: Mapping[str, Sequence[Any]], signature: Signature, *, rows: int
) -> Frame:
    """Check and convert JSON values given a column per feature, each of ``rows`` values
    (the Open Inference Protocol's named tensors, MLflow's ``inputs``): the checks of
    ``frame_from_records``, column by column, with fast paths for a column of plain
    numbers or of known categories. Raises ``InvalidCells`` naming each bad column: an
    unknown name, a length other than ``rows``, a required feature absent, bad values
    (``details``: per feature, up to ten ``row i: message``)."""
    errors: dict[str, list[str]] = {}
    cells: list[tuple[int, str, str]] = []
    expected = ", ".join(signature.names)
    for name, values in columns.items():
        if signature.feature(str(name)) is None:
            errors[str(name)] = [f"Unknown feature. Expected: {_clip(expected)}."]
        elif len(values) != rows:
            errors[str(name)] = [f"{len(values)} values; the other inputs have {rows}."]
    out: dict[str, np.ndarray] = {}
    for feature in signature.features:
        given = columns.get(feature.name)
        if given is None or len(given) != rows:
            if given is None and feature.required:
                errors[feature.name] = ["This feature is required."]
                cells += [(i, feature.name, MISSING) for i in range(rows)]
            out[feature.name] = _as_column(feature, [None] * rows)
            continue
        column, bad = _typed_column(feature, given)
        out[feature.name] = column
        if bad:
            cells += [(i, feature.name, kind) for i, _, kind in bad]
            errors[feature.name] = [f"row {i}: {message}" for i, message, _ in bad[:10]]
    if errors:
        first = next(iter(errors))
        raise InvalidCells(
            f"Input '{first}': {errors[first][0]}",
            details=errors,
            frame=Frame(out, rows),
            cells=cells,
        )
    return Frame(out, rows)


def _typed_column(
    feature: Feature, values: Sequence[Any]
) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    if feature.type == "number" and all(
        type(v) is float or type(v) is int
        for v in values  # bool is not a number
    ):
        try:
            numbers = np.array(values, dtype=np.float64)
        except OverflowError:  # an integer beyond float64: the general path says so
            numbers = None
        if numbers is not None and np.isfinite(numbers).all():
            return numbers, []
    if (
        feature.type == "category"
        and feature.categories
        and not feature.numeric_categories
        and all(type(v) is str for v in values)
        and set(values) <= feature.known
    ):
        column = np.empty(len(values), dtype=object)
        column[:] = values
        return column, []
    return _json_column(feature, list(values))


def _numbers_only(records: Sequence[Any], signature: Signature) -> Frame | None:
    """The frame of records that hold every feature as a finite int or float and nothing
    else, built as one matrix; None for anything else, which the general path checks and
    explains. A one-row request to a model of 30 numbers spent a quarter of its time in
    the general path's 30 one-element columns."""
    names = signature.names
    try:
        rows = [[record[name] for name in names] for record in records]
    except (KeyError, TypeError):  # a missing feature, or a record that is not an object
        return None
    if any(len(record) != len(names) for record in records):  # unknown keys
        return None
    for row in rows:
        for value in row:
            if type(value) is not float and type(value) is not int:  # bool is not a number
                return None
    try:
        matrix = np.array(rows, dtype=np.float64).reshape(len(records), len(names))
    except OverflowError:  # an integer beyond float64
        return None
    if not np.isfinite(matrix).all():
        return None
    columns = {name: matrix[:, j] for j, name in enumerate(names)}
    return Frame(columns, len(records), matrix)


def _record_problems(record: Any, signature: Signature) -> dict[str, list[str]]:
    if not isinstance(record, Mapping):
        return {"non_field_errors": ["Expected an object of feature names and values."]}
    unknown = [key for key in record if signature.feature(str(key)) is None]
    if not unknown:
        return {}
    expected = ", ".join(signature.names)
    return {str(key): [f"Unknown feature. Expected: {_clip(expected)}."] for key in unknown}


def _json_column(
    feature: Feature, values: list[Any]
) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    bad: list[tuple[int, str, str]] = []
    out: list[Any] = []
    for i, value in enumerate(values):
        try:
            out.append(_json_value(feature, value))
        except ValueError as exc:
            bad.append((i, str(exc), _kind(exc)))
            out.append(None)
    return _as_column(feature, out), bad


def _is_missing_text(feature: Feature, value: Any) -> bool:
    return isinstance(value, str) and value.strip() in feature.missing


def _json_value(feature: Feature, value: Any) -> Any:
    if value is None or _is_missing_text(feature, value):
        if feature.required:
            raise Refused("This feature is required.", MISSING)
        return None
    if feature.type == "number":
        return _to_number(value)
    if feature.type == "boolean":
        return _to_boolean(value)
    if feature.type == "category":
        return _to_category(feature, value)
    if not isinstance(value, str):
        raise ValueError(f"A string is required, got {type(value).__name__}.")
    return value


def decimal_text(text: str) -> bool:
    """Whether ``text`` may be a number in ASCII decimal notation: float() also takes
    digits of other scripts ("٣٧") and underscores between digits ("1_000"), which no
    client means as a number here."""
    return text.isascii() and "_" not in text


def _to_number(value: Any) -> float:
    # bool is an int in Python; JSON true for an age is a client bug, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"A number is required, got {type(value).__name__}.")
    if isinstance(value, str) and not decimal_text(value):
        raise ValueError(f"A number is required, got '{_clip(value)}'.")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"A number is required, got '{_clip(str(value))}'.") from None
    if not math.isfinite(number):
        raise ValueError("A finite number is required.")
    return number


_TRUE_TEXTS = {"true": True, "1": True, "false": False, "0": False}


def _to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_TEXTS:
        return _TRUE_TEXTS[value.strip().lower()]
    if not isinstance(value, (str, int, float)):
        raise ValueError(f"true or false is required, got {type(value).__name__}.")
    raise ValueError(f"true or false is required, got '{_clip(str(value))}'.")


def _to_category(feature: Feature, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"A string is required, got {type(value).__name__}.")
    known = feature.categories or ()
    if feature.numeric_categories:  # 2, 2.0 and "2" are the category 2
        try:
            if isinstance(value, str) and not decimal_text(value):
                raise ValueError(value)
            number = float(value)
        except ValueError:
            raise Refused(_not_a_category(feature, str(value)), UNSEEN) from None
        for category in known:
            if category == number:
                return category
        if feature.unknown == "error":
            raise Refused(_not_a_category(feature, str(value)), UNSEEN)
        return number
    if not isinstance(value, str):
        raise ValueError(f"A string is required, got {type(value).__name__}.")
    text = value.strip()
    if known and feature.unknown == "error" and text not in feature.known:
        raise Refused(_not_a_category(feature, text), UNSEEN)
    return text


def _not_a_category(feature: Feature, text: str) -> str:
    known = [str(c) for c in feature.categories or ()]
    shown = ", ".join(known[:MAX_SHOWN_VALUES])
    more = f" and {len(known) - MAX_SHOWN_VALUES} more" if len(known) > MAX_SHOWN_VALUES else ""
    return f"'{_clip(text)}' is not a valid {feature.name}. Valid: {shown}{more}."


def _as_column(feature: Feature, values: list[Any]) -> np.ndarray:
    if feature.type == "number":
        return np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def frame_from_text(
    columns: Mapping[str, Sequence[str]], signature: Signature, *, first_line: int = 2
) -> Frame:
    """Check and convert the text cells of a CSV file, column by column, with fast paths
    for clean columns. An empty cell is missing. Bad cells raise ``InvalidInput`` naming
    the first one's line (``first_line`` is the line of row 0) and column; ``details.cells``
    lists up to ten."""
    n = len(next(iter(columns.values()))) if columns else 0
    out: dict[str, np.ndarray] = {}
    problems: list[dict[str, Any]] = []
    refused: list[tuple[int, str, str]] = []
    for feature in signature.features:
        cells = columns[feature.name]
        column, bad = _text_column(feature, cells)
        refused += [(i, feature.name, kind) for i, _, kind in bad]
        for i, message, _ in bad[:10]:
            problems.append(
                {
                    "line": first_line + i,
                    "column": feature.name,
                    "value": _clip(cells[i].strip(), 40),
                    "message": message,
                }
            )
        out[feature.name] = column
    if problems:
        problems.sort(key=lambda p: p["line"])
        first = problems[0]
        raise InvalidCells(
            f"Line {first['line']}, column '{first['column']}': {first['message']}",
            details={"cells": problems[:10]},
            frame=Frame(out, n),
            cells=refused,
        )
    return Frame(out, n)


def _text_column(
    feature: Feature, cells: Sequence[str]
) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    if feature.type == "number":
        return _number_cells(feature, cells)
    # Categories, strings and booleans: a column of a file holds a handful of distinct
    # cells (and a string column's cells are taken as they are): each distinct cell is
    # checked once, then the column is mapped. A category column whose cells are all known
    # as they are needs no mapping at all.
    if feature.type == "category" and feature.categories and set(cells) <= feature.known:
        if not feature.numeric_categories:
            column = np.empty(len(cells), dtype=object)
            column[:] = cells
            return column, []
    converted: dict[str, Any] = {}
    refused: dict[str, tuple[str, str]] = {}
    for cell in set(cells):
        try:
            converted[cell] = _json_value(feature, None if not cell.strip() else cell)
        except ValueError as exc:
            refused[cell] = (str(exc), _kind(exc))
    bad = (
        [(i, *refused[cell]) for i, cell in enumerate(cells) if cell in refused] if refused else []
    )
    values = [converted.get(cell) for cell in cells]
    return _as_column(feature, values), bad


def _number_cells(
    feature: Feature, cells: Sequence[str]
) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    try:  # the common case: every cell a number, parsed in one C loop
        if decimal_text("".join(cells)):  # one pass in C too
            numbers = np.array(cells, dtype=np.float64)
            if np.isfinite(numbers).all():
                return numbers, []
    except ValueError:
        pass
    numbers = np.empty(len(cells), dtype=np.float64)
    bad: list[tuple[int, str, str]] = []
    for i, cell in enumerate(cells):
        try:
            value = _json_value(feature, None if not cell.strip() else cell)
            numbers[i] = math.nan if value is None else value
        except ValueError as exc:
            bad.append((i, str(exc), _kind(exc)))
            numbers[i] = math.nan
    return numbers, bad


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
