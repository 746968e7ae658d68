"""The Adult income classifier runtime: an artifact bundle plus the code that serves it.

An artifact is a joblib file holding a plain dict (``make_bundle``): the fitted scikit-learn
estimator, the fitted ``Preprocessing`` as lists and dicts, the metrics measured in training
and the scikit-learn version. It serves like any other runtime (``runtime.Runtime``): one
``Frame`` per call, checked against the Adult signature, encoded by the bundle's own
preprocessing, one model call for all rows. ``compute_predictions`` (records in, answers
out) comes with the interface: a single prediction is a batch of one.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np

from apps.core.errors import ModelUnavailable
from apps.ml import artifacts, compiled
from apps.ml.answer import ModelOutput
from apps.ml.codecs import Frame
from apps.ml.compiled import CompiledModel, Converter
from apps.ml.income_classifier import schema
from apps.ml.income_classifier.preprocessing import Preprocessing
from apps.ml.runtime import Runtime, only_sklearn, single_threaded
from apps.ml.signature import Signature

BUNDLE_FORMAT = "ml_pipeline.income_classifier/1"
THRESHOLD = 0.5  # ">50K" when P(>50K) is above it, as the forests' own predict


def make_bundle(
    estimator: Any,
    preprocessing: Preprocessing,
    *,
    metrics: Mapping[str, float],
    sample: np.ndarray | None = None,
) -> dict[str, Any]:
    """What the training script saves with joblib; ``IncomeClassifier`` reads it back.

    ``sample``: encoded rows (a few thousand from the training data) on which a compiled
    form of the model must reproduce scikit-learn before it may serve (``compiled.py``).
    """
    import sklearn

    return {
        "format": BUNDLE_FORMAT,
        "estimator": estimator,
        "preprocessing": preprocessing.to_dict(),
        "classes": list(schema.CLASSES),
        "metrics": dict(metrics),
        "sklearn_version": sklearn.__version__,
        "verification_sample": None if sample is None else np.asarray(sample, dtype=np.float64),
    }


def is_bundle(obj: Any) -> bool:
    """Whether an unpickled artifact is an Adult bundle (rather than a plain estimator)."""
    return isinstance(obj, Mapping) and obj.get("format") == BUNDLE_FORMAT


class IncomeClassifier(Runtime):
    """Serves any scikit-learn classifier with ``predict_proba`` trained on an Adult bundle
    (``kinds/adult.py``)."""

    _estimator: Any  # the scikit-learn model; None until first needed (from the cache)

    def __init__(
        self,
        bundle: Mapping[str, Any],
        *,
        artifact_name: str = "",
        artifact_sha256: str = "",
    ) -> None:
        if not isinstance(bundle, Mapping) or bundle.get("format") != BUNDLE_FORMAT:
            raise ModelUnavailable(
                f"Artifact '{artifact_name}' is not an income classifier bundle "
                f"(expected format {BUNDLE_FORMAT}); see research/README.md."
            )
        estimator = _serving_estimator(bundle["estimator"], artifact_name)
        self._setup(
            preprocessing=bundle["preprocessing"],
            metrics=bundle.get("metrics", {}),
            sklearn_version=bundle["sklearn_version"],
            positive=_positive_column(estimator, artifact_name),
            sample=bundle.get("verification_sample"),
            artifact_name=artifact_name,
            artifact_sha256=artifact_sha256,
        )
        self._estimator = estimator

    def _setup(
        self,
        *,
        preprocessing: Mapping[str, Any],
        metrics: Mapping[str, float],
        sklearn_version: str,
        positive: int,
        sample: np.ndarray | None,
        artifact_name: str,
        artifact_sha256: str,
    ) -> None:
        self.preprocessing = Preprocessing.from_dict(preprocessing)
        self.metrics: dict[str, float] = dict(metrics)
        self.sklearn_version = sklearn_version
        self.artifact_name = artifact_name
        self.artifact_sha256 = artifact_sha256
        self.verification_sample = sample
        self.compiled: CompiledModel | None = None
        self._positive = positive
        self._estimator = None
        self.artifacts_root: Path | None = None  # where the artifact is, to unpickle it late
        self._estimator_lock = threading.Lock()

    @classmethod
    def from_artifact(
        cls, root: Path, name: str, *, sha256: str | None = None, compile: bool = False
    ) -> Self:
        """Load ``name`` from the folder ``root``; with ``compile``, also build (or load
        from its cache) the verified compiled form."""
        bundle, actual = artifacts.load_verified(root, name, sha256)
        wrapper = cls(bundle, artifact_name=name, artifact_sha256=actual)
        wrapper.artifacts_root = root
        if compile:
            wrapper.compile(artifacts.resolve(root, name))
        return wrapper

    @classmethod
    def from_compiled_cache(cls, root: Path, name: str, *, sha256: str) -> Self | None:
        """Serve ``name`` from its verified compiled form without unpickling the artifact
        (or importing scikit-learn): a worker starts in a fraction of the time and memory.
        The artifact's bytes must still hash to ``sha256``; the estimator itself is
        unpickled only if a batch large enough for scikit-learn arrives. None when there is
        no usable cache."""
        artifacts.verify_hash(root, name, sha256)
        cached = compiled.load_cached(artifacts.resolve(root, name), sha256)
        if cached is None:
            return None
        wrapper = cls.__new__(cls)
        wrapper._setup(
            preprocessing=cached.card["preprocessing"],
            metrics=cached.card["metrics"],
            sklearn_version=cached.card["sklearn_version"],
            positive=cached.card["positive"],
            sample=cached.sample,
            artifact_name=name,
            artifact_sha256=sha256,
        )
        wrapper.artifacts_root = root
        wrapper.compiled = cached.model
        return wrapper

    @property
    def estimator(self) -> Any:
        """The scikit-learn estimator, unpickled (hash-checked) on first need when the
        wrapper was built from its compiled cache."""
        if self._estimator is None:
            with self._estimator_lock:
                if self._estimator is None:
                    if self.artifacts_root is None:
                        raise ModelUnavailable(f"No artifact to load '{self.artifact_name}' from.")
                    bundle, _ = artifacts.load_verified(
                        self.artifacts_root, self.artifact_name, self.artifact_sha256
                    )
                    self._estimator = _serving_estimator(bundle["estimator"], self.artifact_name)
        return self._estimator

    def compile(self, artifact: Path, converter: Converter | None = None) -> bool:
        """Serve through ONNX Runtime where it is faster, if the compiled form is verified.
        Returns whether it is in use; on any problem it logs why and keeps scikit-learn."""
        self.compiled = compiled.compile_model(
            estimator=self.estimator,
            reference=self._sklearn_proba,
            positive=self._positive,
            sample=self.verification_sample,
            artifact=artifact,
            sha256=self.artifact_sha256,
            card={
                "preprocessing": self.preprocessing.to_dict(),
                "metrics": self.metrics,
                "sklearn_version": self.sklearn_version,
            },
            **({"converter": converter} if converter else {}),
        )
        return self.compiled is not None

    @property
    def features(self) -> tuple[str, ...]:
        return self.preprocessing.features

    @property
    def signature(self) -> Signature:  # type: ignore[override]
        return self.preprocessing.signature()

    @property
    def parallel_rows(self) -> bool:  # type: ignore[override]
        """Parts of a batch may be predicted at once where one engine serves every size
        (so a part goes where the whole would): ONNX Runtime, or the estimator alone when
        it is scikit-learn's own (a bundle may hold any classifier)."""
        if self.compiled is not None:
            return self.compiled.max_rows >= compiled.ALWAYS
        return self._estimator_is_sklearns

    @functools.cached_property
    def _estimator_is_sklearns(self) -> bool:
        # Once per wrapper: the estimator does not change, and asking walks its parameters.
        return only_sklearn(self.estimator)

    @property
    def engine(self) -> str:  # type: ignore[override]
        return "onnx" if self.compiled is not None else "sklearn"

    @property
    def engine_note(self) -> str:  # type: ignore[override]
        return self.compiled.origin if self.compiled is not None else ""

    def encode(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        return self.preprocessing.encode(frame)

    def predict_encoded(self, encoded: tuple[np.ndarray, np.ndarray]) -> ModelOutput:
        matrix, filled = encoded
        positive = self.predict_proba(matrix)
        return ModelOutput(
            labels=np.array(self.labels_for(positive), dtype=object),
            probabilities=np.column_stack([1.0 - positive, positive]),
            imputed=self.preprocessing.imputed(filled),
            engine=self.engine,
        )

    @staticmethod
    def labels_for(probabilities: np.ndarray) -> list[str]:
        """The label of every row (positive above ``THRESHOLD``), from one vectorised
        comparison; the labels are the two shared strings, not a copy per row."""
        classes = (schema.NEGATIVE_LABEL, schema.POSITIVE_LABEL)
        return [classes[positive] for positive in (probabilities > THRESHOLD).tolist()]

    @property
    def feature_card(self) -> list[dict[str, str]]:
        """The features in column order with their types, as the model card shows them."""
        types = self.preprocessing.feature_types()
        return [{"name": name, "type": types[name]} for name in self.features]

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        """P(>50K) for an encoded matrix: one model call for all its rows, through the
        compiled form when there is one and it is the faster path for this many rows."""
        if self.compiled is not None and len(matrix) <= self.compiled.max_rows:
            return self.compiled.predict_proba(matrix)
        return self._sklearn_proba(matrix)

    def _sklearn_proba(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(matrix)[:, self._positive])


def _positive_column(estimator: Any, artifact_name: str) -> int:
    """The column of ``predict_proba`` that holds P(>50K). Training encodes the labels 0
    and 1; a bundle fitted on the label text itself (">50K") is served as well."""
    classes = [str(c) for c in np.asarray(estimator.classes_).tolist()]
    for positive in ("1", schema.POSITIVE_LABEL, "True"):
        if positive in classes and len(classes) == 2:
            return classes.index(positive)
    raise ModelUnavailable(
        f"The estimator in '{artifact_name}' has classes {classes[:5]}; an Adult bundle's "
        f"are 0 and 1 (or '{schema.NEGATIVE_LABEL}' and '{schema.POSITIVE_LABEL}')."
    )


def _serving_estimator(estimator: Any, artifact_name: str) -> Any:
    if not hasattr(estimator, "predict_proba"):
        raise ModelUnavailable(f"The estimator in '{artifact_name}' has no predict_proba.")
    return single_threaded(estimator)
