"""Model artifacts on disk: where they may live and how they are opened.

A joblib file is a pickle, and unpickling runs code. So an artifact is only ever opened
from inside the configured artifacts folder, and only after its bytes hash to the sha256
recorded in the database when it was registered. Nothing here imports Django: the folder
and the trusted types are passed in by the caller (the registry reads them from settings).

A ``.skops`` file is loaded with skops, which rebuilds objects without unpickling and
refuses any type outside a list of trusted ones. That list is the operator's
(``SKOPS_TRUSTED_TYPES``, on top of skops' own defaults), never the types a file names:
trusting what the file asks for is the hole MLflow shipped (GHSA-w582-9x45-8mpx).

A ``.skops`` file is a zip, and skops inflates its members into memory while it checks
the types: a member that unpacked to 1.6 GB took 3.3 GB of memory and 18.6 s before
skops refused the file. So a caller that takes files from others passes ``max_unpacked``,
and the sizes the zip declares are checked before skops opens it.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apps.core.errors import ModelRejected, ModelUnavailable, PayloadTooLarge, UntrustedTypes

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
    root: Path,
    name: str,
    expected_sha256: str | None,
    *,
    trusted: Sequence[str] = (),
    max_unpacked: int | None = None,
) -> tuple[Any, str]:
    """Load artifact ``name`` from ``root`` (skops or joblib, by its suffix); returns the
    object and the file's sha256.

    With ``expected_sha256`` set (every load of a registered algorithm), a file whose hash
    differs is refused before it is opened. ``None`` is only for registering a new file,
    whose hash is then recorded. The file is read once and the same bytes are hashed and
    loaded, so it cannot be swapped between the check and the load. ``trusted``: the types a
    ``.skops`` file may hold beyond skops' defaults; ``max_unpacked``: the bytes its members
    may unpack to (``check_unpacked``), None for no limit."""
    data, actual = read_verified(root, name, expected_sha256)
    if is_skops(name):
        return load_skops(data, trusted, max_unpacked=max_unpacked), actual
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


def check_unpacked(data: bytes, limit: int) -> None:
    """Refuse (413) the zip ``data`` when its members together unpack to more than
    ``limit`` bytes, before anything is inflated. The total, not each member: a hundred
    members just under a per-member limit cost as much memory as one over it. The sizes
    are the ones the zip declares, and they bound what is read: Python's zipfile stops
    reading a member at its declared size (and a member that inflates to something else
    fails its CRC)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError) as exc:  # not a zip; a damaged directory
        raise ModelRejected(f"The file is not a readable .skops file ({exc}).") from exc
    if total > limit:
        raise PayloadTooLarge(
            f"The .skops file unpacks to {total} bytes, more than the {limit} this service "
            "takes (MODEL_MAX_UNPACKED_BYTES).",
            details={"unpacked_bytes": total, "limit": limit},
        )


def load_skops(data: bytes, trusted: Sequence[str], *, max_unpacked: int | None = None) -> Any:
    """Rebuild a skops file, refusing any type outside skops' defaults and ``trusted``, and
    (with ``max_unpacked``) a file that unpacks to more bytes than that."""
    import skops.io

    if max_unpacked is not None:
        check_unpacked(data, max_unpacked)
    refused = untrusted_types(data, trusted)
    if refused:
        raise UntrustedTypes(refused)
    # The operator's list, never the file's own: every type the file holds was just
    # checked against it.
    return skops.io.loads(data, trusted=list(trusted))
