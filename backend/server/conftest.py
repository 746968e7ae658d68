"""Shared fixtures: model artifacts trained for the test session, and a clean registry."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import LazySettings, settings
from rest_framework.test import APIClient

from apps.ml.registry import MLRegistry, set_registry
from apps.ml.tests.factories import train_tiny_artifact


@pytest.fixture(scope="session")
def demo_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real demo models, trained once per session by research/train.py (seconds)."""
    from train import train  # research/train.py

    folder = tmp_path_factory.mktemp("demo_artifacts")
    train(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny models with the demo file names, for tests that don't need real accuracy.
    Neither saw native-country 'Holand-Netherlands' in training."""
    folder = tmp_path_factory.mktemp("tiny_artifacts")
    for seed, name in enumerate(("random_forest.joblib", "extra_trees.joblib")):
        train_tiny_artifact(
            folder, name, seed=seed, exclude={"native-country": "Holand-Netherlands"}
        )
    return folder


@pytest.fixture(autouse=True)
def no_writes_to_the_real_artifacts(
    tmp_path_factory: pytest.TempPathFactory, settings: LazySettings
) -> None:
    """Every test's MODEL_ARTIFACTS_PATH is a folder of its own unless it sets one:
    registering a model copies the file there, and research/artifacts is the user's."""
    settings.MODEL_ARTIFACTS_PATH = tmp_path_factory.mktemp("artifacts")


@pytest.fixture
def artifacts_dir(tiny_artifacts: Path, tmp_path: Path, settings: LazySettings) -> Path:
    """A private copy of the tiny artifacts (tests may tamper with it), set as
    MODEL_ARTIFACTS_PATH."""
    folder = tmp_path / "artifacts"
    shutil.copytree(tiny_artifacts, folder)
    settings.MODEL_ARTIFACTS_PATH = folder
    return folder


def _use_registry(registry: MLRegistry) -> Iterator[MLRegistry]:
    previous = set_registry(registry)
    try:
        yield registry
    finally:
        set_registry(previous)


@pytest.fixture
def registry(artifacts_dir: Path) -> Iterator[MLRegistry]:
    """An empty registry over the tiny artifacts."""
    yield from _use_registry(MLRegistry(artifacts_dir, trusted=settings.SKOPS_TRUSTED_TYPES))


@pytest.fixture
def demo_registry(registry: MLRegistry, db: None) -> MLRegistry:
    """The two Adult demo algorithms (tiny stand-ins), registered as on a fresh start:
    endpoint income_classifier, random forest in production, extra trees in testing."""
    from apps.endpoints.catalogue import demo

    for spec in demo.DEMO_MODELS[:2]:
        assert demo.register(spec), spec
    return registry


@pytest.fixture
def all_demos(registry: MLRegistry, db: None, demo_artifacts: Path) -> MLRegistry:
    """All four demo models, one endpoint per task: the two Adult classifiers (tiny), the
    diabetes regressor and the wine classifier (the real ones, trained in a second)."""
    from apps.endpoints.catalogue import demo

    for spec in demo.DEMO_MODELS:
        if not (registry.artifacts_root / spec.file).exists():
            for name in (spec.file, spec.example):
                if name:
                    shutil.copy(demo_artifacts / name, registry.artifacts_root / name)
        assert demo.register(spec), spec
    return registry


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def staff_api(db: None) -> APIClient:
    """A client logged in as an operator: a staff user with the endpoints app's permissions."""
    from apps.endpoints.tests.factories import operator

    client = APIClient()
    client.force_authenticate(operator())
    return client
