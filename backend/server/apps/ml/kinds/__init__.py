"""The kinds of model this service serves, as plug-ins: one table, read by registration
(``intake.py``), the registry (``registry.py``) and ``manage.py register_model --kind``.

Each kind (``base.Kind``) says how to recognise an artifact, inspect it at registration and
load it into a runtime. Adding one is a module and an entry here; nothing else changes.
The catalogue stores a kind's key (``MLAlgorithm.wrapper``): a database row can only name
an entry of this table, never make the service import code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apps.core.errors import ModelUnavailable
from apps.ml.kinds.adult import AdultKind
from apps.ml.kinds.base import Kind
from apps.ml.kinds.lightgbm import LightGBMKind
from apps.ml.kinds.sklearn import SklearnKind
from apps.ml.kinds.xgboost import XGBoostKind

# In the order a loaded object is offered to them: the first that claims it takes it. The
# catch-all (any estimator with predict) is last.
KINDS: tuple[Kind, ...] = (AdultKind(), LightGBMKind(), XGBoostKind(), SklearnKind())

_BY_KEY = {key: kind for kind in KINDS for key in (kind.key, *kind.aliases)}


def get(key: str) -> Kind:
    """The kind a version was stored with; ``ModelUnavailable`` for a key this server does
    not know (a newer release registered it, or the row was edited)."""
    kind = _BY_KEY.get(key)
    if kind is None:
        raise ModelUnavailable(f"Unknown kind of model '{key}'.")
    return kind


def keys() -> list[str]:
    """Every key a version may be stored with, its kind's own first."""
    return list(_BY_KEY)


def claiming(model: Any) -> Kind | None:
    """The kind of a model loaded from a joblib or skops file, or None."""
    return next((kind for kind in KINDS if kind.claims(model)), None)


def for_file(path: Path) -> Kind | None:
    """The kind whose own (pickle-free) format a file is in, by its name; None for a
    joblib or skops file."""
    return next((kind for kind in KINDS if kind.claims_file(path)), None)


def stored_suffix(name: str) -> str:
    """The suffix an uploaded file is stored under: a kind's own format's, or ``.skops``,
    else ``.joblib`` (what a loader reads the file as follows from it)."""
    suffix = Path(name).suffix.lower()
    if suffix == ".skops" or any(suffix in kind.native_suffixes for kind in KINDS):
        return suffix
    return ".joblib"
