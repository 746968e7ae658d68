"""The catalogue: registering model files (any kind), the demo models, and serving what was
registered by another process."""

from __future__ import annotations

import io
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

from apps.core.errors import Conflict, ModelRejected, ModelUnavailable, NotFound
from apps.endpoints.catalogue import demo
from apps.endpoints.catalogue.register import register_model
from apps.endpoints.models import Endpoint, MLAlgorithm, MLAlgorithmStatus
from apps.ml.registry import MLRegistry
from apps.ml.tests import models
from apps.ml.tests.factories import SAMPLE_RECORD, train_tiny_artifact

SERVER_DIR = Path(settings.BASE_DIR)
pytestmark = pytest.mark.django_db


def active_status(algorithm: MLAlgorithm) -> str:
    return str(algorithm.statuses.get(active=True).status)


def upload(model: Any, name: str) -> io.BytesIO:
    """A model file as an HTTP upload hands it over: bytes, no path."""
    buffer = io.BytesIO()
    if name.endswith(".skops"):
        import skops.io

        skops.io.dump(model, buffer)
    else:
        import joblib

        joblib.dump(model, buffer)
    buffer.seek(0)
    return buffer


def test_a_fresh_start_registers_the_demo_models_with_their_statuses(
    demo_registry: MLRegistry,
) -> None:
    algorithms = {a.name: a for a in MLAlgorithm.objects.all()}
    assert set(algorithms) == {"random forest", "extra trees"}
    assert active_status(algorithms["random forest"]) == "production"
    assert active_status(algorithms["extra trees"]) == "testing"
    rf = algorithms["random forest"]
    assert rf.artifact == "random_forest.joblib" and rf.wrapper == "income_classifier"
    assert rf.artifact_sha256 and rf.sklearn_version and rf.target_column == "income"


def test_every_demo_task_is_served_from_a_fresh_start(all_demos: MLRegistry) -> None:
    from apps.endpoints.serving.predict import predict

    tasks = dict(MLAlgorithm.objects.values_list("parent_endpoint__name", "task"))
    assert tasks == {
        "income_classifier": "classification",
        "diabetes_progression": "regression",
        "wine_cultivar": "classification",
    }
    wine = MLAlgorithm.objects.get(parent_endpoint__name="wine_cultivar")
    assert wine.artifact == "wine.skops" and len(wine.classes) == 3
    for algorithm in MLAlgorithm.objects.filter(statuses__status="production"):
        [served] = predict(
            endpoint_name=algorithm.parent_endpoint.name,
            records=[algorithm.example[0] if algorithm.example else SAMPLE_RECORD],
            status="production",
        )
        assert ("prediction" in served) == (algorithm.task == "regression")


def test_a_restart_reuses_the_rows_instead_of_duplicating_them(demo_registry: MLRegistry) -> None:
    before = list(MLAlgorithm.objects.values_list("pk", flat=True).order_by("pk"))
    demo.forget()
    for spec in demo.DEMO_MODELS[:2]:
        assert demo.register(spec)
    assert list(MLAlgorithm.objects.values_list("pk", flat=True).order_by("pk")) == before
    assert Endpoint.objects.count() == 1
    assert MLAlgorithmStatus.objects.count() == 2  # no second initial status


def test_demo_models_wait_for_their_files_and_register_later(tmp_path: Path, settings: Any) -> None:
    settings.MODEL_ARTIFACTS_PATH = tmp_path
    settings.ML_DEMO_MODELS = True
    demo.forget()
    try:
        assert demo.ensure_registered() is False  # nothing trained yet
        assert MLAlgorithm.objects.count() == 0
        for name in ("random_forest.joblib", "extra_trees.joblib"):
            train_tiny_artifact(tmp_path, name)
        with mock.patch.object(demo, "DEMO_MODELS", demo.DEMO_MODELS[:2]):
            demo._State.next_try = 0.0  # as if RETRY_SECONDS had passed
            assert demo.ensure_registered() is True
        assert MLAlgorithm.objects.count() == 2
    finally:
        demo.forget()


def test_a_database_without_tables_is_retried_not_fatal(artifacts_dir: Path, settings: Any) -> None:
    settings.ML_DEMO_MODELS = True
    demo.forget()
    failing = mock.patch.object(
        demo,
        "find_algorithm",
        side_effect=OperationalError("no such table: endpoints_endpoint"),
    )
    try:
        with mock.patch.object(demo, "DEMO_MODELS", demo.DEMO_MODELS[:2]):
            with failing:
                assert demo.ensure_registered() is False
            assert MLAlgorithm.objects.count() == 0
            demo._State.next_try = 0.0  # as if RETRY_SECONDS had passed
            assert demo.ensure_registered() is True
        assert MLAlgorithm.objects.count() == 2
    finally:
        demo.forget()


def test_a_new_version_is_a_new_row_and_the_same_one_a_conflict(registry: MLRegistry) -> None:
    from apps.endpoints.tests.factories import algorithm

    first = algorithm(registry, version="1")
    assert algorithm(registry, version="2").pk != first.pk
    with pytest.raises(Conflict, match="already 'random forest' version '1'"):
        algorithm(registry, version="1")


@pytest.mark.django_db(transaction=True)
def test_concurrent_registration_of_one_version_records_one_row(registry: MLRegistry) -> None:
    from apps.endpoints.tests.factories import algorithm

    barrier = threading.Barrier(6)
    created: list[int] = []
    refused: list[BaseException] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            created.append(algorithm(registry).pk)
        except Conflict as exc:
            refused.append(exc)
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
    assert len(created) == 1 and len(refused) == 5
    assert MLAlgorithm.objects.count() == 1
    assert MLAlgorithmStatus.objects.filter(active=True).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_loser_of_the_registration_race_leaves_the_winners_file(
    registry: MLRegistry, artifacts_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: six identical uploads at once; the one that had created the
    content-addressed file lost the race to record it, and deleted the file the winner's
    version names (predict and /readyz then answered 503). Made certain here: the file's
    creator records last."""
    from apps.endpoints.catalogue import register

    data = upload(models.wine_classifier(), "wine.skops").getvalue()
    placed, recorded = threading.Event(), threading.Event()
    real_place, real_record = register._place, register._record

    def place(root: Path, artifact: Any, file_name: str) -> Any:
        if threading.current_thread().name == "second":
            placed.wait(timeout=5)  # the first creates the file
        found = real_place(root, artifact, file_name)
        placed.set()
        return found

    def record(**fields: Any) -> MLAlgorithm:
        if threading.current_thread().name == "first":
            recorded.wait(timeout=2)  # the second records first, where nothing stops it
        try:
            return real_record(**fields)
        finally:
            recorded.set()

    monkeypatch.setattr(register, "_place", place)
    monkeypatch.setattr(register, "_record", record)
    outcomes: dict[str, str] = {}

    def worker() -> None:
        try:
            register_model(
                artifact=io.BytesIO(data), file_name="wine.skops", endpoint_name="wine",
                name="lr", version="1", status="production",
            )  # fmt: skip
            outcomes[threading.current_thread().name] = "registered"
        except Conflict:
            outcomes[threading.current_thread().name] = "conflict"
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, name=name) for name in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == ["conflict", "registered"]
    [version] = MLAlgorithm.objects.all()
    assert (artifacts_dir / version.artifact).is_file()  # the winner's file is there
    assert registry.get(version).compute_prediction(models.wine()[0].iloc[0].to_dict())["label"]


def test_an_upload_is_stored_under_its_sha256_and_the_same_bytes_once(
    registry: MLRegistry, artifacts_dir: Path
) -> None:
    model = models.wine_classifier()
    data = upload(model, "wine.skops").getvalue()
    first = register_model(
        artifact=io.BytesIO(data), file_name="wine.skops", endpoint_name="wine", name="a",
        version="1",
    ).algorithm  # fmt: skip
    second = register_model(
        artifact=io.BytesIO(data), file_name="mine.skops", endpoint_name="wine", name="b",
        version="1",
    ).algorithm  # fmt: skip
    assert first.artifact == second.artifact == f"uploads/{first.artifact_sha256}.skops"
    assert (artifacts_dir / first.artifact).read_bytes() == data
    assert len(list((artifacts_dir / "uploads").iterdir())) == 1


def test_a_pickle_upload_is_refused_unless_allowed_and_leaves_nothing(
    registry: MLRegistry, artifacts_dir: Path
) -> None:
    model = models.wine_classifier()
    with pytest.raises(ModelRejected, match="joblib or pickle file runs code"):
        register_model(
            artifact=upload(model, "wine.joblib"), file_name="wine.joblib",
            endpoint_name="wine", name="a", version="1",
        )  # fmt: skip
    assert not list((artifacts_dir / "uploads").iterdir())
    assert MLAlgorithm.objects.count() == 0
    allowed = register_model(
        artifact=upload(model, "wine.joblib"), file_name="wine.joblib", endpoint_name="wine",
        name="a", version="1", allow_pickle=True,
    )  # fmt: skip
    assert allowed.algorithm.artifact.endswith(".joblib")


def test_an_untrusted_type_is_refused_naming_it_and_leaves_nothing(
    registry: MLRegistry, artifacts_dir: Path, settings: Any
) -> None:
    settings.SKOPS_TRUSTED_TYPES = ("numpy.dtype",)  # the operator left trees out
    with pytest.raises(ModelRejected) as refused:
        register_model(
            artifact=upload(models.mixed_classifier(), "mixed.skops"), file_name="mixed.skops",
            endpoint_name="mixed", name="forest", version="1",
        )  # fmt: skip
    assert refused.value.details == {"untrusted_types": ["sklearn.tree._tree.Tree"]}
    assert "sklearn.tree._tree.Tree" in refused.value.message
    assert not list((artifacts_dir / "uploads").iterdir())


def test_an_algorithm_registered_elsewhere_is_loaded_on_first_use(
    registry: MLRegistry, artifacts_dir: Path
) -> None:
    from apps.endpoints.tests.factories import algorithm

    registered = algorithm(registry)
    other_process = MLRegistry(artifacts_dir)  # knows nothing yet
    runtime = other_process.get(registered)
    assert runtime.compute_prediction(SAMPLE_RECORD)["label"] in {"<=50K", ">50K"}
    assert other_process.get(registered) is runtime  # loaded once


def test_a_changed_file_under_an_existing_version_is_not_served(
    registry: MLRegistry, artifacts_dir: Path
) -> None:
    from apps.endpoints.tests.factories import algorithm

    registered = algorithm(registry)
    train_tiny_artifact(artifacts_dir, registered.artifact, seed=42)  # retrained in place
    with pytest.raises(ModelUnavailable, match="does not match its recorded sha256"):
        MLRegistry(artifacts_dir).get(registered)


@pytest.mark.django_db(transaction=True)
def test_a_second_process_serves_an_algorithm_registered_here(
    registry: MLRegistry, artifacts_dir: Path
) -> None:
    model = models.wine_classifier()
    registered = register_model(
        artifact=upload(model, "wine.skops"), file_name="wine.skops", endpoint_name="wine",
        name="lr", version="1",
    ).algorithm  # fmt: skip
    x, _ = models.wine()
    record = x.iloc[5].to_dict()
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        url = f"sqlite:///{db['NAME']}"
    else:
        url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    script = (
        "import django, json; django.setup();"
        "from apps.endpoints.models import MLAlgorithm;"
        "from apps.ml.registry import get_registry;"
        f"a = MLAlgorithm.objects.get(pk={registered.pk});"
        f"print(json.dumps(get_registry().get(a).compute_prediction({record!r})))"
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
    here = registry.get(registered).compute_prediction(record)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == here


def test_an_empty_catalogue_answers_404_not_a_key_error(registry: MLRegistry) -> None:
    from apps.endpoints.serving.predict import predict

    with pytest.raises(NotFound, match="No endpoint named 'income_classifier'"):
        predict(endpoint_name="income_classifier", records=[SAMPLE_RECORD], status="production")


def test_a_failed_demo_is_retried_after_a_pause_not_on_every_request(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: with a demo file missing, every prediction tried to register the demos
    again: a few queries and a warning in the log per request."""
    settings.MODEL_ARTIFACTS_PATH = tmp_path
    settings.ML_DEMO_MODELS = True
    clock = [1000.0]
    monkeypatch.setattr(demo, "_clock", lambda: clock[0])
    tries: list[str] = []
    real = demo.register

    def counting(spec: demo.DemoModel) -> bool:
        tries.append(spec.name)
        return real(spec)

    monkeypatch.setattr(demo, "register", counting)
    demo.forget()
    try:
        with mock.patch.object(demo, "DEMO_MODELS", demo.DEMO_MODELS[:1]):
            assert [demo.ensure_registered() for _ in range(50)] == [False] * 50
            assert len(tries) == 1
            clock[0] += demo.RETRY_SECONDS
            train_tiny_artifact(tmp_path, "random_forest.joblib")
            assert demo.ensure_registered() is True
            assert len(tries) == 2
    finally:
        demo.forget()
