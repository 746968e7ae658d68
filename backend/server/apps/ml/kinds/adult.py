"""The ``income_classifier`` kind: the Adult census bundles this project trains
(``research/train.py``): a joblib file holding the estimator and the preprocessing fitted
with it, served by ``IncomeClassifier`` with its own verified compiled cache.

The demo models of earlier releases were stored under the keys of the classes that served
them then, ``random_forest`` and ``extra_trees``: they load as this kind.
"""

from __future__ import annotations

from typing import Any

from apps.core.errors import ModelRejected, ServiceError
from apps.ml import signature
from apps.ml.income_classifier import IncomeClassifier
from apps.ml.income_classifier.base import is_bundle
from apps.ml.kinds.base import Intake, Kind, Request, Source, check_predicts
from apps.ml.runtime import Runtime


class AdultKind(Kind):
    key = "income_classifier"
    aliases = ("random_forest", "extra_trees")
    summary = "an Adult census bundle made by research/train.py"

    def claims(self, model: Any) -> bool:
        return is_bundle(model)

    def inspect(self, model: Any, request: Request) -> Intake:
        try:
            runtime = IncomeClassifier(
                model, artifact_name=request.path.name, artifact_sha256=request.sha256
            )
        except ServiceError as exc:
            raise ModelRejected(exc.message) from exc
        runtime.artifacts_root = request.path.parent
        rows = signature.generated_rows(runtime.signature, 1)
        check_predicts(runtime, rows, "a generated row")
        if request.compile:
            runtime.compile(request.path)
        reason = (
            "reproduced scikit-learn on the bundle's verification sample"
            if runtime.compiled is not None
            else "not compiled (see the server log)"
        )
        return Intake(
            kind=self.key,
            runtime=runtime,
            signature=runtime.signature,
            example=rows,
            serving={"engine": runtime.engine, "reason": reason},
            sklearn_version=runtime.sklearn_version,
            metrics=dict(runtime.metrics),
            notes=request.notes,
        )

    def load(self, source: Source) -> Runtime:
        version = source.version
        if source.compile:  # a verified compiled cache serves without unpickling
            cached = IncomeClassifier.from_compiled_cache(
                source.root, version.artifact, sha256=version.artifact_sha256
            )
            if cached is not None:
                return cached
        return IncomeClassifier.from_artifact(
            source.root, version.artifact, sha256=version.artifact_sha256, compile=source.compile
        )
