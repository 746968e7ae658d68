"""The registry in every order a user meets it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.conf import settings
from django.db import OperationalError, connection

from apps.endpoints.errors import ModelUnavailable, NotFound
from apps.endpoints.models import Endpoint, MLAlgorithm, MLAlgorithmStatus
from apps.ml.demo import DEMO_MODELS
from apps.ml.income_classifier import RandomForestClassifier
from apps.ml.registry import MLRegistry, get_registry
from apps.ml.tests.factories import SAMPLE_RECORD, train_tiny_artifact

SERVER_DIR = Path(settings.BASE_DIR)


def active_status(algorithm: MLAlgorithm) -> str:
    return algorithm.statuses.get(active=True).status


def register(registry: MLRegistry, name: str = "rf", version: str = "1", **kw: str) -> MLAlgorithm:
    wrapper = RandomForestClassifier.from_artifact(registry.artifacts_root)
    args: dict[str, Any] = {
        "endpoint_name": "income_classifier",
        "algorithm_object": wrapper,
        "algorithm_name": name,
        "algorithm_status": "production",
        "algorithm_version": version,
        "owner": "tests",
        "algorithm_description": "a forest",
        "algorithm_code": "code v1",
    }
    args.update(kw)
    return registry.add_algorithm(**args)


def test_the_app_builds_a_registry_without_touching_the_database() -> None:
    # Built in MlConfig.ready(); this test has no database access at all.
    assert isinstance(get_registry(), MLRegistry)


@pytest.mark.django_db
def test_a_fresh_start_registers_the_demo_models_with_their_statuses(
    demo_registry: MLRegistry,
) -> None:
    algorithms = {a.name: a for a in MLAlgorithm.objects.all()}
    assert set(algorithms) == {"random forest", "extra trees"}
    assert active_status(algorithms["random forest"]) == "production"
    assert active_status(algorithms["extra trees"]) == "testing"
    assert set(demo_registry.endpoints) == {a.pk for a in algorithms.values()}
    rf = algorithms["random forest"]
    assert rf.artifact == "random_forest.joblib"
    assert rf.artifact_sha256 == demo_registry.endpoints[rf.pk].artifact_sha256
    assert rf.wrapper == "random_forest" and rf.sklearn_version


@pytest.mark.django_db
def test_a_restart_reuses_the_rows_instead_of_duplicating_them(
    demo_registry: MLRegistry, artifacts_dir: Path
) -> None:
    before = list(MLAlgorithm.objects.values_list("pk", flat=True).order_by("pk"))
    restarted = MLRegistry(artifacts_dir, DEMO_MODELS)
    restarted.ensure_declared()
    assert list(MLAlgorithm.objects.values_list("pk", flat=True).order_by("pk")) == before
    assert Endpoint.objects.count() == 1
    assert MLAlgorithmStatus.objects.count() == 2  # no second initial status


@pytest.mark.django_db
def test_editing_code_or_description_does_not_create_a_second_row(registry: MLRegistry) -> None:
    first = register(registry)
    set_algorithm_status_to_testing(first)
    again = register(registry, algorithm_code="code v2", algorithm_description="edited")
    assert again.pk == first.pk
    assert MLAlgorithm.objects.count() == 1
    assert active_status(again) == "testing"  # the initial status is not re-applied


def set_algorithm_status_to_testing(algorithm: MLAlgorithm) -> None:
    from apps.endpoints.services import set_algorithm_status

    set_algorithm_status(algorithm=algorithm, status="testing", created_by="tests")


@pytest.mark.django_db
def test_a_new_version_is_a_new_row(registry: MLRegistry) -> None:
    assert register(registry, version="1").pk != register(registry, version="2").pk


@pytest.mark.django_db(transaction=True)
def test_concurrent_registration_creates_one_row(registry: MLRegistry) -> None:
    barrier = threading.Barrier(6)
    results: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(register(registry).pk)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1
    assert MLAlgorithm.objects.count() == 1
    assert MLAlgorithmStatus.objects.filter(active=True).count() == 1


@pytest.mark.django_db
def test_an_algorithm_registered_elsewhere_is_loaded_on_first_use(
    registry: MLRegistry, artifacts_dir: Path
) -> None:
    algorithm = register(registry)
    other_process = MLRegistry(artifacts_dir)  # knows nothing yet
    wrapper = other_process.get(algorithm)
    assert wrapper.compute_prediction(SAMPLE_RECORD)["label"] in {"<=50K", ">50K"}
    assert other_process.get(algorithm) is wrapper  # loaded once


@pytest.mark.django_db
def test_a_tampered_artifact_is_refused_with_a_clear_error(
    registry: MLRegistry, artifacts_dir: Path
) -> None:
    algorithm = register(registry)
    path = artifacts_dir / algorithm.artifact
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelUnavailable, match="does not match its recorded sha256"):
        MLRegistry(artifacts_dir).get(algorithm)


@pytest.mark.django_db
def test_a_missing_artifact_or_unknown_wrapper_is_unavailable(
    registry: MLRegistry, artifacts_dir: Path
) -> None:
    algorithm = register(registry)
    (artifacts_dir / algorithm.artifact).unlink()
    with pytest.raises(ModelUnavailable, match="cannot be read"):
        MLRegistry(artifacts_dir).get(algorithm)
    algorithm.wrapper = "os.system"
    with pytest.raises(ModelUnavailable, match="Unknown wrapper"):
        MLRegistry(artifacts_dir).get(algorithm)


@pytest.mark.django_db
def test_a_changed_file_under_an_existing_version_is_not_served(
    registry: MLRegistry, artifacts_dir: Path
) -> None:
    algorithm = register(registry)
    train_tiny_artifact(artifacts_dir, algorithm.artifact, seed=42)  # retrained in place
    fresh = MLRegistry(artifacts_dir)
    again = register(fresh)
    assert again.pk == algorithm.pk
    assert again.pk not in fresh.endpoints
    with pytest.raises(ModelUnavailable):
        fresh.get(again)


@pytest.mark.django_db
def test_demo_models_wait_for_their_artifacts_and_register_later(tmp_path: Path) -> None:
    registry = MLRegistry(tmp_path, DEMO_MODELS)
    registry.ensure_declared()  # nothing trained yet
    assert MLAlgorithm.objects.count() == 0
    for name in ("random_forest.joblib", "extra_trees.joblib"):
        train_tiny_artifact(tmp_path, name)
    registry.ensure_declared()
    assert MLAlgorithm.objects.count() == 2


@pytest.mark.django_db
def test_a_database_without_tables_is_retried_not_fatal(artifacts_dir: Path) -> None:
    registry = MLRegistry(artifacts_dir, DEMO_MODELS)
    failing = mock.patch(
        "apps.endpoints.services.register_algorithm",
        side_effect=OperationalError("no such table: endpoints_endpoint"),
    )
    with failing:
        registry.ensure_declared()
    assert MLAlgorithm.objects.count() == 0
    registry.ensure_declared()
    assert MLAlgorithm.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_second_process_serves_an_algorithm_registered_here(
    registry: MLRegistry, artifacts_dir: Path
) -> None:
    algorithm = register(registry)
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        url = f"sqlite:///{db['NAME']}"
    else:
        url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    script = (
        "import django, json; django.setup();"
        "from apps.endpoints.models import MLAlgorithm;"
        "from apps.ml.registry import get_registry;"
        f"a = MLAlgorithm.objects.get(pk={algorithm.pk});"
        f"print(json.dumps(get_registry().get(a).compute_prediction({SAMPLE_RECORD!r})))"
    )
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="server.settings",
        SECRET_KEY="x",
        DATABASE_URL=url,
        MODEL_ARTIFACTS_PATH=str(artifacts_dir),
        ML_DEMO_MODELS="0",
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=SERVER_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    here = registry.get(algorithm).compute_prediction(SAMPLE_RECORD)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == here


@pytest.mark.django_db
def test_an_empty_registry_answers_404_not_a_key_error(registry: MLRegistry) -> None:
    from apps.endpoints.services import predict

    with pytest.raises(NotFound, match="No endpoint named 'income_classifier'"):
        predict(endpoint_name="income_classifier", records=[SAMPLE_RECORD], status="production")
