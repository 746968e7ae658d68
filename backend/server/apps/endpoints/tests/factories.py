"""Catalogue rows for tests, without going through a registry."""

from __future__ import annotations

from apps.endpoints import services
from apps.endpoints.models import MLAlgorithm
from apps.ml.registry import MLRegistry


def algorithm(
    registry: MLRegistry,
    *,
    name: str = "random forest",
    version: str = "0.0.1",
    status: str = "production",
    endpoint: str = "income_classifier",
    artifact: str = "random_forest.joblib",
) -> MLAlgorithm:
    """An algorithm served by one of the tiny artifacts in ``registry.artifacts_root``."""
    from apps.ml.income_classifier import IncomeClassifier

    wrapper = IncomeClassifier.from_artifact(registry.artifacts_root, artifact)
    created, _ = services.register_algorithm(
        endpoint_name=endpoint,
        name=name,
        version=version,
        status=status,
        owner="tests",
        description="",
        code="",
        wrapper=wrapper.wrapper_key,
        artifact=artifact,
        artifact_sha256=wrapper.artifact_sha256,
        sklearn_version=wrapper.sklearn_version,
    )
    return created
