"""Model artifacts on disk: where they may live and how they are opened.

A joblib file is a pickle, and unpickling runs code. So an artifact is only ever opened
from inside the configured artifacts folder, and only after its bytes hash to the sha256
recorded in the database when it was registered. Nothing here imports Django: the folder
and the trusted types are passed in by the caller (the registry reads them from settings).

A ``.skops`` file is loaded with skops, which rebuilds objects without unpickling and
refuses any type outside a list of trusted ones. That list is the operator's
(``SKOPS_TRUSTED_TYPES``, on top of skops' own defaults), never the types a file names:
trusting what the file asks for is the hole MLflow shipped (GHSA-w582-9x45-8mpx).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apps.core.errors import ModelRejected, ModelUnavailable, UntrustedTypes

_CHUNK = 1 << 20
SKOPS_SUFFIX = ".skops"


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


def is_skops(name: str) -> bool:
    return name.lower().endswith(SKOPS_SUFFIX)


def read_verified(root: Path, name: str, expected_sha256: str | None) -> tuple[bytes, str]:
    """The bytes of artifact ``name`` and their sha256, refused (``ModelUnavailable``) when
    they do not hash to ``expected_sha256``: read once, so what was checked is what is
    used."""
    path = resolve(root, name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelUnavailable(f"Artifact '{name}' cannot be read: {exc.strerror}.") from exc
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and actual != expected_sha256:
        raise ModelUnavailable(_mismatch(name, expected_sha256, actual))
    return data, actual


def load_verified(
    root: Path, name: str, expected_sha256: str | None, *, trusted: Sequence[str] = ()
) -> tuple[Any, str]:
    """Load artifact ``name`` from ``root`` (skops or joblib, by its suffix); returns the
    object and the file's sha256.

    With ``expected_sha256`` set (every load of a registered algorithm), a file whose hash
    differs is refused before it is opened. ``None`` is only for registering a new file,
    whose hash is then recorded. The file is read once and the same bytes are hashed and
    loaded, so it cannot be swapped between the check and the load. ``trusted``: the types a
    ``.skops`` file may hold beyond skops' defaults."""
    data, actual = read_verified(root, name, expected_sha256)
    if is_skops(name):
        return load_skops(data, trusted), actual
    import joblib  # here: a worker serving a verified compiled form never unpickles

    return joblib.load(io.BytesIO(data)), actual


def untrusted_types(data: bytes, trusted: Sequence[str]) -> list[str]:
    """The types in skops ``data`` that neither skops' defaults nor ``trusted`` cover."""
    import skops.io

    try:
        found = skops.io.get_untrusted_types(data=data)
    except Exception as exc:  # not a skops file at all
        raise ModelRejected(f"The file is not a readable .skops file ({exc}).") from exc
    return sorted(set(found) - set(trusted))


def load_skops(data: bytes, trusted: Sequence[str]) -> Any:
    """Rebuild a skops file, refusing any type outside skops' defaults and ``trusted``."""
    import skops.io

    refused = untrusted_types(data, trusted)
    if refused:
        raise UntrustedTypes(refused)
    # The operator's list, never the file's own: every type the file holds was just
    # checked against it.
    return skops.io.loads(data, trusted=list(trusted))
