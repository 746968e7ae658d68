"""The model registry: MLAlgorithm database ids -> loaded classifier wrappers, per process.

Each worker process holds its own registry. The database is the shared truth: an algorithm
registered by any process (the demo models, a management command, another worker) is loaded
here on first use from the artifact its row records, after checking the artifact's sha256.
A lookup never ends in a bare KeyError: it returns a wrapper, or raises ``AlgorithmNotFound``
(404) or ``ModelUnavailable`` (503) with a message that says what is wrong.

``AppConfig.ready()`` builds the registry and declares the demo models without touching the
database (it may not exist yet); they are written to the database after ``migrate`` and, at
the latest, on the first prediction a process serves.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.db import DatabaseError

from apps.endpoints import services
from apps.endpoints.errors import ModelUnavailable
from apps.endpoints.models import MLAlgorithm
from apps.ml.income_classifier import WRAPPERS, IncomeClassifier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlgorithmSpec:
    """An algorithm a process should make sure is registered (the demo models)."""

    endpoint_name: str
    wrapper: type[IncomeClassifier]
    name: str
    version: str
    status: str
    owner: str
    description: str


class MLRegistry:
    def __init__(
        self, artifacts_root: Path, declared: Sequence[AlgorithmSpec] = (), *, compile: bool = False
    ) -> None:
        self.artifacts_root = artifacts_root
        self.compile = compile  # build the verified ONNX form of each model (compiled.py)
        self.endpoints: dict[int, IncomeClassifier] = {}  # MLAlgorithm id -> wrapper
        # When each algorithm started serving in this process (the model card shows it).
        self.loaded_at: dict[int, datetime] = {}
        self._declared = tuple(declared)
        self._synced = not self._declared
        self._lock = threading.RLock()

    # -- registration --------------------------------------------------------------------

    def add_algorithm(
        self,
        endpoint_name: str,
        algorithm_object: IncomeClassifier,
        algorithm_name: str,
        algorithm_status: str,
        algorithm_version: str,
        owner: str,
        algorithm_description: str,
        algorithm_code: str,
    ) -> MLAlgorithm:
        """Record the algorithm in the database (reusing the row of the same endpoint, name
        and version) and serve ``algorithm_object`` for it in this process."""
        algorithm, _ = services.register_algorithm(
            endpoint_name=endpoint_name,
            name=algorithm_name,
            version=algorithm_version,
            status=algorithm_status,
            owner=owner,
            description=algorithm_description,
            code=algorithm_code,
            wrapper=algorithm_object.wrapper_key,
            artifact=algorithm_object.artifact_name,
            artifact_sha256=algorithm_object.artifact_sha256,
            sklearn_version=algorithm_object.sklearn_version,
            features=algorithm_object.feature_card,
            metrics=algorithm_object.metrics,
            classes=algorithm_object.classes,
        )
        if algorithm.artifact_sha256 != algorithm_object.artifact_sha256:
            # Never serve, under an existing version, a model other than the one recorded:
            # other processes would load the recorded one. A new model is a new version.
            logger.error(
                "Algorithm %s (%s %s) is recorded with artifact sha256 %s but %s now has %s; "
                "not serving it. Register the new file as a new version.",
                algorithm.pk,
                algorithm_name,
                algorithm_version,
                algorithm.artifact_sha256,
                algorithm_object.artifact_name,
                algorithm_object.artifact_sha256,
            )
        else:
            self._record_card_if_missing(algorithm, algorithm_object)
            with self._lock:
                self._serve(algorithm.pk, algorithm_object)
        return algorithm

    def _serve(self, pk: int, wrapper: IncomeClassifier) -> None:
        self.endpoints[pk] = wrapper
        self.loaded_at[pk] = datetime.now(UTC)

    @staticmethod
    def _record_card_if_missing(algorithm: MLAlgorithm, wrapper: IncomeClassifier) -> None:
        # Rows registered before model cards existed get theirs from the verified artifact
        # the first time any process loads it. Serving must not fail for want of a card.
        if algorithm.features:
            return
        try:
            services.record_model_card(
                algorithm=algorithm, features=wrapper.feature_card, metrics=wrapper.metrics
            )
        except DatabaseError as exc:
            logger.warning("Model card of algorithm %s not recorded: %s", algorithm.pk, exc)

    @property
    def declared_registered(self) -> bool:
        """Whether the declared (demo) algorithms are all in the database."""
        return self._synced

    def ensure_declared(self) -> None:
        """Register the declared algorithms once per process; retried until it succeeds
        (the tables may not exist yet, or an artifact may still be training)."""
        if self._synced:
            return
        with self._lock:
            if self._synced:
                return
            try:
                self._synced = all(self._register(spec) for spec in self._declared)
            except DatabaseError as exc:
                logger.warning("Demo models not registered yet (database not ready: %s).", exc)

    def _register(self, spec: AlgorithmSpec) -> bool:
        registered = MLAlgorithm.objects.filter(
            parent_endpoint__name=spec.endpoint_name, name=spec.name, version=spec.version
        )
        if registered.exists():
            # Loaded on first use like any other algorithm (hash checked then): a worker
            # does not load, at start, models that no request has asked for yet.
            return True
        try:
            wrapper = spec.wrapper.from_artifact(self.artifacts_root, compile=self.compile)
        except ModelUnavailable as exc:
            logger.warning("Demo model %s not registered: %s Run `make train`.", spec.name, exc)
            return False
        self.add_algorithm(
            endpoint_name=spec.endpoint_name,
            algorithm_object=wrapper,
            algorithm_name=spec.name,
            algorithm_status=spec.status,
            algorithm_version=spec.version,
            owner=spec.owner,
            algorithm_description=spec.description,
            algorithm_code=_source_of(spec.wrapper),
        )
        return True

    # -- lookup --------------------------------------------------------------------------

    def get(self, algorithm: MLAlgorithm) -> IncomeClassifier:
        """The wrapper serving ``algorithm``, loaded from its artifact on first use."""
        wrapper = self.endpoints.get(algorithm.pk)
        if wrapper is not None:
            return wrapper
        with self._lock:  # one load per algorithm, even when many threads ask at once
            wrapper = self.endpoints.get(algorithm.pk)
            if wrapper is None:
                wrapper = self._load(algorithm)
                self._serve(algorithm.pk, wrapper)
        self._record_card_if_missing(algorithm, wrapper)
        return wrapper

    def _load(self, algorithm: MLAlgorithm) -> IncomeClassifier:
        wrapper_class = WRAPPERS.get(algorithm.wrapper)
        try:
            if wrapper_class is None:
                raise ModelUnavailable(f"Unknown wrapper '{algorithm.wrapper}'.")
            wrapper = None
            if self.compile:  # a verified compiled cache serves without unpickling
                wrapper = wrapper_class.from_compiled_cache(
                    self.artifacts_root, algorithm.artifact, sha256=algorithm.artifact_sha256
                )
            if wrapper is None:
                wrapper = wrapper_class.from_artifact(
                    self.artifacts_root,
                    algorithm.artifact,
                    sha256=algorithm.artifact_sha256,
                    compile=self.compile,
                )
        except ModelUnavailable as exc:
            logger.error("Algorithm %s cannot be loaded: %s", algorithm.pk, exc.message)
            raise ModelUnavailable(
                f"Algorithm {algorithm.pk} ({algorithm.name} {algorithm.version}) is "
                f"unavailable: {exc.message}"
            ) from exc
        logger.info("Loaded algorithm %s from %s.", algorithm.pk, algorithm.artifact)
        return wrapper


def _source_of(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return ""


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
