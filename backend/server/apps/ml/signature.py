"""What a model expects and answers: its signature, inferred once when it is registered.

In the spirit of MLflow's model signature: the features (name, type, required or optional,
and for a category the values an encoder knows), the task, the classes of a classifier and
the fields of its answers. It travels with the model in the catalogue (``MLAlgorithm``:
``features``, ``task``, ``classes``, ``outputs``), so requests are validated at the edge
(``codecs.py``) without loading the model, and the model card, the OpenAPI schema and the
admin show it.

Inference (``infer``):

- **Features** come from the model: ``feature_names_in_`` when it was fitted on a
  DataFrame, else the input example's header, else ``x0``...``x{n-1}`` from
  ``n_features_in_``.
- **Types**: a feature an encoder reads (``OneHotEncoder``, ``OrdinalEncoder``, directly or
  after an imputer, in a pipeline or a ``ColumnTransformer``) is a ``category`` with the
  encoder's ``categories_``; values outside them are refused when the encoder would refuse
  them (``handle_unknown="error"``). Otherwise the input example's column says: ``boolean``,
  ``number``, or ``string``; without an example, ``number``.
- **Required**: a feature may be absent or null only where the input example has gaps in
  that column; without an example, every feature is required.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from apps.core.errors import ModelRejected

if TYPE_CHECKING:
    import pandas as pd

CLASSIFICATION = "classification"
REGRESSION = "regression"
FEATURE_TYPES = ("number", "category", "string", "boolean")


@dataclass(frozen=True)
class Feature:
    name: str
    type: str  # one of FEATURE_TYPES
    required: bool = True
    # For a category: the values an encoder knows (JSON scalars), and whether a value
    # outside them is refused ("error", the encoder would fail) or passed on ("accept").
    categories: tuple[Any, ...] | None = None
    unknown: str = "error"
    # Texts that mean "missing" besides null and an empty CSV cell (the Adult files: "?").
    missing: tuple[str, ...] = ()
    # The categories as text, for checking cells and JSON strings against them.
    known: frozenset[str] = field(init=False, repr=False, compare=False)
    # Categories that are all numbers (an encoder fitted on numbers): 2, 2.0 and "2" are
    # the category 2, and the ONNX form takes the column as numbers.
    numeric_categories: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "known", frozenset(str(c) for c in self.categories or ()))
        object.__setattr__(
            self,
            "numeric_categories",
            bool(self.categories)
            and all(isinstance(c, (int, float)) for c in self.categories or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if self.categories is not None:
            out["categories"] = list(self.categories)
            out["unknown"] = self.unknown
        if self.missing:
            out["missing"] = list(self.missing)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Feature:
        categories = data.get("categories")
        return cls(
            name=str(data["name"]),
            type=str(data.get("type", "number")),
            # Cards written before required existed described the Adult models, whose
            # features are all optional (filled with the training mode).
            required=bool(data.get("required", False)),
            categories=None if categories is None else tuple(categories),
            unknown=str(data.get("unknown", "error")),
            missing=tuple(data.get("missing", ())),
        )


@dataclass(frozen=True)
class Signature:
    features: tuple[Feature, ...]
    task: str  # CLASSIFICATION or REGRESSION
    classes: tuple[str, ...] = ()  # a classifier's classes as strings, in the model's order
    # The fields of every answer, in order (codecs.Prediction): "label", "probability"
    # (binary classifiers), "probabilities", "prediction" (regressors), "status", "imputed".
    outputs: tuple[str, ...] = ()
    _by_name: dict[str, Feature] = field(init=False, repr=False, compare=False)
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    # Every feature a number (most models fitted on a numeric matrix).
    all_numbers: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {f.name: f for f in self.features})
        object.__setattr__(self, "_names", tuple(f.name for f in self.features))
        object.__setattr__(
            self,
            "all_numbers",
            bool(self.features) and all(f.type == "number" for f in self.features),
        )

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def feature(self, name: str) -> Feature | None:
        return self._by_name.get(name)

    @property
    def positive_class(self) -> str | None:
        """The class whose probability a binary classifier answers as ``probability``
        (scikit-learn's convention: the second of ``classes_``)."""
        return self.classes[1] if len(self.classes) == 2 else None

    def card(self) -> dict[str, Any]:
        """The catalogue's columns: ``features``, ``task``, ``classes``, ``outputs``."""
        return {
            "features": [f.to_dict() for f in self.features],
            "task": self.task,
            "classes": list(self.classes),
            "outputs": list(self.outputs),
        }

    @classmethod
    def from_card(
        cls,
        *,
        features: Sequence[Mapping[str, Any]],
        task: str,
        classes: Sequence[Any],
        outputs: Sequence[str] = (),
    ) -> Signature:
        return cls(
            features=tuple(Feature.from_dict(f) for f in features),
            task=task,
            classes=tuple(str(c) for c in classes),
            outputs=tuple(outputs),
        )


def outputs_for(
    task: str, classes: Sequence[str], *, probabilities: bool, imputed: bool
) -> tuple[str, ...]:
    """The answer fields of a model of ``task``: see ``Signature.outputs``."""
    if task == REGRESSION:
        fields = ["prediction"]
    else:
        fields = ["label"]
        if probabilities:
            fields += ["probability"] if len(classes) == 2 else []
            fields += ["probabilities"]
    fields.append("status")
    if imputed:
        fields.append("imputed")
    return tuple(fields)


# -- inference ---------------------------------------------------------------------------


def infer(model: Any, example: pd.DataFrame | None = None) -> Signature:
    """The signature of a fitted scikit-learn estimator or pipeline (see the module doc).
    ``example``: the input example's rows, feature columns only (the target removed).
    Raises ``ModelRejected`` for a model that is neither a classifier nor a regressor, or
    whose features cannot be told."""
    task, classes = _task(model)
    names = _feature_names(model, example)
    encoded = dict(_encoded_columns(model, names))
    features = []
    for name in names:
        column = example[name] if example is not None else None
        feature = Feature(name=name, type=_type_of(column), required=complete(column))
        if name in encoded:
            categories, unknown = encoded[name]
            feature = replace(feature, type="category", categories=categories, unknown=unknown)
        features.append(feature)
    outputs = outputs_for(
        task, classes, probabilities=hasattr(model, "predict_proba"), imputed=False
    )
    return Signature(tuple(features), task, classes, outputs)


def _task(model: Any) -> tuple[str, tuple[str, ...]]:
    from sklearn.base import is_classifier, is_regressor

    if not hasattr(model, "predict"):
        raise ModelRejected(f"A {type(model).__name__} has no predict(): not a model to serve.")
    if is_classifier(model):
        raw = getattr(model, "classes_", None)
        if raw is None:
            raise ModelRejected(f"The {type(model).__name__} has no classes_: is it fitted?")
        values = list(raw)
        if any(isinstance(v, np.ndarray) for v in values) or np.ndim(raw) != 1:
            raise ModelRejected("Multi-output classifiers are not supported: one target only.")
        classes = tuple(str(v.item() if hasattr(v, "item") else v) for v in values)
        if len(set(classes)) != len(classes):
            raise ModelRejected(f"The classes {list(classes)} are not distinct as text.")
        return CLASSIFICATION, classes
    if is_regressor(model):
        return REGRESSION, ()
    raise ModelRejected(
        f"A {type(model).__name__} is neither a classifier nor a regressor; this service "
        "serves those two tasks."
    )


def _feature_names(model: Any, example: pd.DataFrame | None) -> list[str]:
    fitted = getattr(model, "feature_names_in_", None)
    n = getattr(model, "n_features_in_", None)
    if fitted is not None:
        names = [str(name) for name in fitted]
        if example is not None:
            missing = [name for name in names if name not in example.columns]
            if missing:
                raise ModelRejected(
                    f"The input example lacks the model's feature(s): {', '.join(missing)}."
                )
        return names
    if example is not None:
        names = [str(name) for name in example.columns]
        if n is not None and len(names) != n:
            raise ModelRejected(
                f"The input example has {len(names)} columns; the model was fitted on {n} "
                "features (leave out the target, or name it with target_column)."
            )
        return names
    if n is None:
        raise ModelRejected(
            "The model does not say which features it takes (no feature_names_in_ or "
            "n_features_in_): send an input example."
        )
    return [f"x{i}" for i in range(int(n))]


def _type_of(column: pd.Series | None) -> str:
    if column is None:
        return "number"
    import pandas as pd

    present = column.dropna()
    if pd.api.types.is_bool_dtype(column) or (
        len(present) and all(isinstance(v, (bool, np.bool_)) for v in present)
    ):
        return "boolean"
    if pd.api.types.is_numeric_dtype(column):
        return "number"
    return "string"


def complete(column: pd.Series | None) -> bool:
    """Required unless the example has a gap (null, NaN or an empty string) in the column."""
    if column is None:
        return True
    if column.isna().any():
        return False
    return not (column.dtype == object and (column.astype(str).str.strip() == "").any())


# Transformers that hand their input columns on unchanged in meaning (an imputer fills
# gaps, but a category stays the category the encoder then reads).
_KEEP_COLUMNS = ("SimpleImputer", "MissingIndicator")


def _encoded_columns(
    model: Any, names: list[str]
) -> Iterator[tuple[str, tuple[tuple[Any, ...], str]]]:
    """(feature, (categories, unknown)) for each input feature an encoder reads."""
    try:
        yield from _walk(model, names)
    except Exception:  # introspection of private layouts: no types, not a failure
        return


def _walk(estimator: Any, columns: list[str]) -> Iterator[tuple[str, tuple[tuple[Any, ...], str]]]:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    kind = type(estimator).__name__
    if isinstance(estimator, Pipeline):
        for _, step in estimator.steps:
            if step is None or step == "passthrough":
                continue
            yield from _walk(step, columns)
            if type(step).__name__ not in _KEEP_COLUMNS:
                return  # later steps see transformed values, not the features
    elif isinstance(estimator, ColumnTransformer):
        indices = getattr(estimator, "_transformer_to_input_indices", {})
        for name, transformer, _ in estimator.transformers_:
            if transformer in ("drop", "passthrough"):
                continue
            picked = [columns[i] for i in indices.get(name, [])]
            yield from _walk(transformer, picked)
    elif kind in ("OneHotEncoder", "OrdinalEncoder"):
        unknown = "error" if estimator.handle_unknown == "error" else "accept"
        for column, categories in zip(columns, estimator.categories_, strict=True):
            yield column, (_known_values(categories), unknown)


def _known_values(categories: np.ndarray) -> tuple[Any, ...]:
    values = []
    for value in categories.tolist():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue  # the encoder learnt "missing" as a category: not a value to send
        values.append(value)
    return tuple(values)


# -- rows to try a model on --------------------------------------------------------------


def generated_rows(signature: Signature, n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` records of valid values, for a model registered without an example (one row)
    and to verify a compiled form (more): numbers near 0 with a wide spread, known
    categories, short strings, both booleans."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        row: dict[str, Any] = {}
        for f in signature.features:
            if f.categories:
                row[f.name] = f.categories[
                    (i + int(rng.integers(len(f.categories)))) % len(f.categories)
                ]
            elif f.type == "number":
                row[f.name] = 0.0 if i == 0 else float(rng.normal(0, 3))
            elif f.type == "boolean":
                row[f.name] = bool(i % 2)
            else:
                row[f.name] = f"text{i % 3}"
        rows.append(row)
    return rows
