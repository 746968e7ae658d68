"""Model artifacts that every app host can read: the ``model_artifacts`` storage.

With several hosts behind a load balancer, a model registered on one (an upload lands on
whichever host answered) must serve from all of them. Each artifact is copied, when it is
registered, to a Django storage every host reaches (``MODEL_STORAGE_PATH``, a shared
folder; or ``MODEL_STORAGE``, any storage such as S3 through django-storages), under a name
made of its sha256: the same bytes are one object, and an object is never replaced by
different bytes. Each host keeps its own copy in ``MODEL_ARTIFACTS_PATH`` (its local cache),
fetched on first use; every load checks the sha256 recorded in the catalogue, as before,
and a fetched copy whose bytes do not hash to it is never put in place.

Why a storage and not the database: artifacts run from kilobytes to hundreds of MB (a
forest of 100 deep trees is 18 MB compressed); in PostgreSQL each would bloat the table,
its WAL and every backup, and be read through one connection. Object stores and shared
folders are made for that, and the catalogue keeps only the name and the hash.

Without the storage configured (one host, the default), nothing here is used.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from django.core.files import File
from django.core.files.storage import Storage, storages

from apps.core.errors import ModelUnavailable
from apps.ml import artifacts

ALIAS = "model_artifacts"
_CHUNK = 1 << 20


def configured() -> bool:
    from django.conf import settings

    return ALIAS in settings.STORAGES


def _store() -> Storage:
    return storages[ALIAS]


def key(name: str, sha256: str) -> str:
    """The object's name in the storage: its sha256, with the suffix that says how to
    load it (skops or joblib)."""
    suffix = artifacts.SKOPS_SUFFIX if artifacts.is_skops(name) else Path(name).suffix
    return f"{sha256}{suffix}"


def push(path: Path, name: str, sha256: str) -> None:
    """Copy the registered artifact at ``path`` to the storage, unless it is there."""
    store, object_name = _store(), key(name, sha256)
    if store.exists(object_name):  # the same bytes, by their name
        return
    with path.open("rb") as handle:
        saved = store.save(object_name, File(handle))
    if saved != object_name:  # saved meanwhile by another host: keep one copy
        store.delete(saved)


def fetch(root: Path, name: str, sha256: str) -> Path:
    """Copy artifact ``name`` from the storage into ``root`` (the local cache), checking
    its sha256 on the way; answers its local path. A copy whose bytes differ is refused
    and not kept."""
    target = artifacts.resolve(root, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.fetch")
    digest = hashlib.sha256()
    try:
        try:
            with _store().open(key(name, sha256), "rb") as source, tmp.open("wb") as out:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except (OSError, FileNotFoundError) as exc:
            raise ModelUnavailable(
                f"Artifact '{name}' is not on this host, and the shared model storage has "
                f"no copy of it ({exc})."
            ) from exc
        if digest.hexdigest() != sha256:
            raise ModelUnavailable(
                f"The shared model storage's copy of '{name}' does not match its recorded "
                f"sha256 (recorded {sha256[:12]}..., copy {digest.hexdigest()[:12]}...); "
                "refusing it."
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
