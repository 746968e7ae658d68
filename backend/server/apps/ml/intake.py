"""What registering a model file asks of the ML layer: open it safely, find its kind, and
let the kind say what the file is (signature, classes, the engine that serves it). No
database: the catalogue (``apps/endpoints/catalogue/register.py``) records what this
finds, or nothing when it refuses.

A file in a kind's own pickle-free format (``kinds.for_file``) goes to that kind as it is.
Any other file is loaded first: a ``.skops`` file with the operator's trusted types, a
joblib pickle only where the caller allows pickles; the first kind that claims the object
takes it (``kinds.claiming``). The kind then checks that it predicts on its input example,
or on a generated row when there is none. Any failure is ``ModelRejected`` (400) saying
why.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apps.core.errors import ModelRejected, PayloadTooLarge, ServiceError
from apps.ml import artifacts, kinds
from apps.ml.kinds.base import Intake, Kind, Request, read_example

__all__ = ["Intake", "inspect"]


def inspect(
    path: Path,
    *,
    sha256: str,
    trusted: Sequence[str],
    allow_pickle: bool,
    example: bytes | None = None,
    target_column: str | None = None,
    compile: bool = True,
    kind: str | None = None,
    classes: Sequence[str] = (),
    max_unpacked: int | None = None,
) -> Intake:
    """Check the model file at ``path`` (inside the artifacts folder, with ``sha256``).
    ``kind``: the one the operator named (a key of the table), else found. ``classes``:
    a classifier's classes where its file does not hold them. ``max_unpacked``: the bytes
    a ``.skops`` file may unpack to (413 past it, before skops reads it)."""
    asked = _asked(kind)
    frame = read_example(example, target_column) if example is not None else None
    request = Request(path, sha256, frame, compile, classes=tuple(str(c) for c in classes))
    native = kinds.for_file(path)
    if native is not None:
        if asked is not None and asked is not native:
            raise ModelRejected(f"A {path.suffix} file is a {native.key} model, not {kind!r}.")
        return native.inspect(None, request)
    if not artifacts.is_skops(path.name) and not allow_pickle:
        raise ModelRejected(
            "A joblib or pickle file runs code when it is loaded, so it is refused here: "
            "save the model with skops.io.dump (a .skops file), or in its library's own "
            "format (LightGBM's text, XGBoost's JSON), or an operator can set "
            "ALLOW_PICKLE_UPLOADS=1, or register it with manage.py register_model."
        )
    model, request.notes, request.trained_with = _load(path, sha256, trusted, max_unpacked)
    found = asked if asked is not None and asked.claims(model) else kinds.claiming(model)
    if found is None:
        raise ModelRejected(f"A {type(model).__name__} has no predict(): not a model to serve.")
    if asked is not None and found is not asked:
        raise ModelRejected(
            f"The file holds a {found.key} model ({type(model).__name__}), not {kind!r}."
        )
    return found.inspect(model, request)


def _asked(key: str | None) -> Kind | None:
    if key is None:
        return None
    try:
        return kinds.get(key)
    except ServiceError:
        raise ModelRejected(f"Unknown kind {key!r}; one of: {', '.join(kinds.keys())}.") from None


def _load(
    path: Path, sha256: str, trusted: Sequence[str], max_unpacked: int | None
) -> tuple[Any, list[str], str]:
    """The model, notes for the operator, and the scikit-learn version it was saved with."""
    import sklearn
    from sklearn.exceptions import InconsistentVersionWarning

    notes: list[str] = []
    trained_with = sklearn.__version__
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        try:
            model, _ = artifacts.load_verified(
                path.parent, path.name, sha256, trusted=trusted, max_unpacked=max_unpacked
            )
        # Untrusted types, a file that is not skops, one that unpacks too large: said as
        # they are (a 413 stays a 413).
        except (ModelRejected, PayloadTooLarge):
            raise
        except ServiceError as exc:
            raise ModelRejected(exc.message, details=exc.details) from exc
        except Exception as exc:  # a damaged file, or a class this server does not have
            raise ModelRejected(
                f"The file does not load: {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
    for warning in caught:
        if isinstance(warning.message, InconsistentVersionWarning):
            trained_with = warning.message.original_sklearn_version
    if trained_with != sklearn.__version__:
        notes.append(
            f"The model was saved with scikit-learn {trained_with}; this server runs "
            f"{sklearn.__version__}. Models are only reliable on the version they were saved with."
        )
    return model, notes, trained_with
