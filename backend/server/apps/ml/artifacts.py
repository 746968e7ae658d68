"""Model artifacts on disk: where they may live and how they are opened.

A joblib file is a pickle, and unpickling runs code. So an artifact is only ever opened
from inside the configured artifacts folder, and only after its bytes hash to the sha256
recorded in the database when it was registered. Nothing here imports Django: the folder is
passed in by the caller (the registry reads it from settings).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from apps.endpoints.errors import ModelUnavailable

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def resolve(root: Path, name: str) -> Path:
    """The absolute path of artifact ``name`` inside ``root``; refuses anything outside it."""
    root = root.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise ModelUnavailable(f"Artifact '{name}' lies outside the artifacts folder {root}.")
    return path


def verify_hash(root: Path, name: str, expected_sha256: str) -> Path:
    """Check, without unpickling, that artifact ``name`` still has the recorded hash."""
    path = resolve(root, name)
    try:
        actual = sha256_of(path)
    except OSError as exc:
        raise ModelUnavailable(f"Artifact '{name}' cannot be read: {exc.strerror}.") from exc
    if actual != expected_sha256:
        raise ModelUnavailable(_mismatch(name, expected_sha256, actual))
    return path


def _mismatch(name: str, expected: str, actual: str) -> str:
    return (
        f"Artifact '{name}' does not match its recorded sha256 "
        f"(recorded {expected[:12]}..., file {actual[:12]}...); refusing to load it."
    )


def load_verified(root: Path, name: str, expected_sha256: str | None) -> tuple[Any, str]:
    """Unpickle artifact ``name`` from ``root``; returns the object and the file's sha256.

    With ``expected_sha256`` set (every load of a registered algorithm), a file whose hash
    differs is refused before unpickling. ``None`` is only for registering a new file, whose
    hash is then recorded. The file is read once and the same bytes are hashed and
    unpickled, so it cannot be swapped between the check and the load.
    """
    path = resolve(root, name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelUnavailable(f"Artifact '{name}' cannot be read: {exc.strerror}.") from exc
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and actual != expected_sha256:
        raise ModelUnavailable(_mismatch(name, expected_sha256, actual))
    import joblib  # here: a worker serving a verified compiled form never unpickles

    return joblib.load(io.BytesIO(data)), actual
