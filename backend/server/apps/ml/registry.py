"""The model registry: catalogue versions -> loaded runtimes, per process. No database.

Each worker process holds its own registry. The catalogue (the database, read by
``apps/endpoints``) is the shared truth: it hands the registry a version (anything shaped
like ``Servable``; an ``MLAlgorithm`` row is one) and the registry answers the runtime that
serves it, loading it on first use from the artifact the version records, after checking
the artifact's sha256. A lookup never ends in a bare KeyError: it returns a runtime, or
raises ``ModelUnavailable`` (503) saying what is wrong.

Loading is the version's kind's (``wrapper``, a key of the table in ``kinds/``): e.g. a
scikit-learn model serves by its recorded ONNX form where the catalogue says ONNX serves
and the cached form still has the recorded sha256 (no unpickling), else from its artifact.

``retain`` unloads the versions that no longer serve (MLServer's registry loads a new
version before it unloads the old one; here the catalogue says which ones still serve).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from apps.core.errors import ModelUnavailable, ServiceError
from apps.ml import artifacts, kinds
from apps.ml.kinds.base import Servable, Source, signature_of
from apps.ml.runtime import Runtime

logger = logging.getLogger(__name__)

__all__ = ["MLRegistry", "Servable", "get_registry", "set_registry", "signature_of"]


# (local folder, artifact name, sha256) -> the artifact's path in that folder
Fetch = Callable[[Path, str, str], Path]


class MLRegistry:
    def __init__(
        self,
        artifacts_root: Path,
        *,
        compile: bool = False,
        trusted: Sequence[str] = (),
        fetch: Fetch | None = None,
    ) -> None:
        self.artifacts_root = artifacts_root
        # Brings an artifact missing from artifacts_root there, checked against its sha256
        # (shared_store.fetch, where hosts share a model storage); None: one host.
        self.fetch = fetch
        self.compile = compile  # serve verified ONNX forms (compiled.py)
        self.trusted = tuple(trusted)  # the types a .skops artifact may hold
        self.runtimes: dict[int, Runtime] = {}  # MLAlgorithm id -> runtime
        # When each version started serving in this process (the model card shows it).
        self.loaded_at: dict[int, datetime] = {}
        self._lock = threading.RLock()

    def get(self, version: Servable) -> Runtime:
        """The runtime serving ``version``, loaded from its artifact on first use."""
        runtime = self.runtimes.get(version.pk)
        if runtime is not None:
            return runtime
        with self._lock:  # one load per version, even when many threads ask at once
            runtime = self.runtimes.get(version.pk)
            if runtime is None:
                runtime = self._load(version)
                self.runtimes[version.pk] = runtime
                self.loaded_at[version.pk] = datetime.now(UTC)
        return runtime

    def retain(self, serving: Iterable[int]) -> list[int]:
        """Unload every version not in ``serving`` (ids that still have a status); returns
        the ids unloaded."""
        keep = set(serving)
        with self._lock:
            dropped = [pk for pk in self.runtimes if pk not in keep]
            for pk in dropped:
                del self.runtimes[pk]
                self.loaded_at.pop(pk, None)
        if dropped:
            logger.info("Unloaded algorithm(s) %s: they no longer serve.", dropped)
        return dropped

    def ensure_local(self, version: Servable) -> None:
        """The version's artifact in this host's folder: fetched from the shared model
        storage when it is missing (another host registered it). A file that is there is
        left alone: every load checks its sha256, and a mismatch is a 503, not a swap."""
        if self.fetch is None:
            return
        path = artifacts.resolve(self.artifacts_root, version.artifact)
        if not path.exists():
            self.fetch(self.artifacts_root, version.artifact, version.artifact_sha256)
            logger.info("Fetched %s from the shared model storage.", version.artifact)

    def _load(self, version: Servable) -> Runtime:
        try:
            self.ensure_local(version)
            kind = kinds.get(version.wrapper)
            runtime = kind.load(
                Source(
                    root=self.artifacts_root,
                    path=artifacts.resolve(self.artifacts_root, version.artifact),
                    version=version,
                    compile=self.compile,
                    trusted=self.trusted,
                )
            )
        except ServiceError as exc:
            logger.error("Algorithm %s cannot be loaded: %s", version.pk, exc.message)
            raise ModelUnavailable(
                f"Algorithm {version.pk} ({version.name} {version.version}) is "
                f"unavailable: {exc.message}"
            ) from exc
        logger.info(
            "Loaded algorithm %s from %s (%s).", version.pk, version.artifact, runtime.engine
        )
        return runtime


_registry: MLRegistry | None = None


def get_registry() -> MLRegistry:
    """The process's registry (built by ``MlConfig.ready()``)."""
    if _registry is None:
        raise RuntimeError("The ML registry is built in MlConfig.ready(); is apps.ml installed?")
    return _registry


def set_registry(registry: MLRegistry | None) -> MLRegistry | None:
    """Replace the process's registry (app start-up, and tests); returns the previous one."""
    global _registry
    previous, _registry = _registry, registry
    return previous
