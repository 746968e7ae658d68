"""/healthz and /readyz in good and broken states, as a load balancer sees them, and what
/readyz tells whom: anyone, that it is ready or not; an operator with METRICS_TOKEN, why."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.db import OperationalError, connection
from rest_framework.test import APIClient

from apps.endpoints.tests.factories import algorithm
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import train_tiny_artifact

TOKEN = "probe-token"


@pytest.fixture
def operator_probe(settings: Any) -> dict[str, str]:
    """METRICS_TOKEN set, and the header that reads /readyz's checks with it."""
    settings.METRICS_TOKEN = TOKEN
    return {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}


def test_healthz_answers_without_touching_the_database(api: APIClient) -> None:
    # No django_db mark: any query would fail this test.
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_probes_answer_a_load_balancer_that_addresses_the_server_by_ip(api: APIClient) -> None:
    # 10.0.0.7 is not in ALLOWED_HOSTS; every other path answers 400 to it.
    assert api.get("/healthz", HTTP_HOST="10.0.0.7:8000").status_code == 200
    assert api.get("/api/v1/endpoints", HTTP_HOST="10.0.0.7:8000").status_code == 400


def test_probes_refuse_other_methods_in_the_one_error_shape(api: APIClient) -> None:
    response = api.post("/healthz")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.django_db
def test_readyz_is_ready_and_loads_every_algorithm_with_an_active_status(
    api: APIClient, demo_registry: MLRegistry, artifacts_dir: Path, operator_probe: Any
) -> None:
    fresh = MLRegistry(artifacts_dir)  # a worker that has served nothing yet
    with mock.patch("apps.ops.views.get_registry", return_value=fresh):
        response = api.get("/readyz", **operator_probe)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ready" and body["database"] == "ok"
    assert [(a["name"], a["status"], a["ok"]) for a in body["algorithms"]] == [
        ("random forest", "production", True),
        ("extra trees", "testing", True),
    ]
    assert set(fresh.runtimes) == {a["id"] for a in body["algorithms"]}  # warmed up
    assert all(a["loaded_at"] for a in body["algorithms"])


@pytest.mark.django_db
def test_readyz_names_an_algorithm_whose_artifact_is_missing(
    api: APIClient, registry: MLRegistry, artifacts_dir: Path, operator_probe: Any
) -> None:
    algorithm(registry, name="forest", artifact="random_forest.joblib")
    algorithm(registry, name="trees", artifact="extra_trees.joblib", status="testing")
    (artifacts_dir / "extra_trees.joblib").unlink()
    response = api.get("/readyz", **operator_probe)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready"
    assert "(trees 0.0.1)" in error["message"] and "cannot be read" in error["message"]
    assert "forest" not in error["message"]
    assert [a["ok"] for a in error["details"]["algorithms"]] == [True, False]


@pytest.mark.django_db
def test_readyz_fails_when_a_loaded_models_file_no_longer_matches_its_hash(
    api: APIClient, registry: MLRegistry, artifacts_dir: Path, operator_probe: Any
) -> None:
    served = algorithm(registry)
    assert api.get("/readyz").status_code == 200  # loaded and verified
    train_tiny_artifact(artifacts_dir, served.artifact, seed=42)  # replaced behind our back
    response = api.get("/readyz", **operator_probe)
    assert response.status_code == 503
    assert "no longer matches its recorded sha256" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_readyz_refuses_to_load_an_artifact_with_a_wrong_hash(
    api: APIClient, registry: MLRegistry, artifacts_dir: Path, operator_probe: Any
) -> None:
    served = algorithm(registry)
    path = artifacts_dir / served.artifact
    path.write_bytes(path.read_bytes() + b"tampered")
    response = api.get("/readyz", **operator_probe)
    assert response.status_code == 503
    assert "does not match its recorded sha256" in response.json()["error"]["message"]
    assert served.pk not in registry.runtimes


@pytest.mark.django_db
def test_readyz_reports_the_database_down(
    api: APIClient, registry: MLRegistry, operator_probe: Any
) -> None:
    refused = OperationalError("connection to server at 127.0.0.1, port 5432 failed")
    with mock.patch.object(connection, "cursor", side_effect=refused):
        response = api.get("/readyz", **operator_probe)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["message"].startswith("Not ready: database unavailable: connection to server")
    assert error["details"]["algorithms"] == "not checked: the database is unavailable"


@pytest.mark.django_db
def test_readyz_is_not_ready_while_the_demo_models_cannot_be_registered(
    api: APIClient, tmp_path: Path, settings: Any, operator_probe: Any
) -> None:
    from apps.endpoints.catalogue import demo

    settings.ML_DEMO_MODELS = True
    settings.MODEL_ARTIFACTS_PATH = tmp_path  # nothing trained there
    demo.forget()
    try:
        response = api.get("/readyz", **operator_probe)
    finally:
        demo.forget()
    assert response.status_code == 503
    assert "demo models are not registered" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_readyz_unloads_a_version_that_no_longer_has_a_status(
    api: APIClient, registry: MLRegistry
) -> None:
    from apps.endpoints.models import MLAlgorithmStatus

    served = algorithm(registry)
    assert api.get("/readyz").status_code == 200
    assert served.pk in registry.runtimes
    MLAlgorithmStatus.objects.filter(parent_mlalgorithm=served).update(active=False)
    assert api.get("/readyz").status_code == 200
    assert served.pk not in registry.runtimes


@pytest.mark.django_db
def test_readyz_says_when_a_swapped_compiled_cache_was_rebuilt(
    api: APIClient, registry: MLRegistry, artifacts_dir: Path, settings: Any, operator_probe: Any
) -> None:
    """Regression: a model's ``.onnx`` and ``.serving.npz`` replaced by another model's
    served that model, and /readyz still said ready with nothing to notice."""
    import shutil

    from apps.ml import compiled
    from apps.ml.income_classifier import IncomeClassifier

    settings.ML_COMPILED_INFERENCE = True
    train_tiny_artifact(artifacts_dir, "victim.joblib", sample_rows=300)
    train_tiny_artifact(artifacts_dir, "donor.joblib", seed=9, rows=500, sample_rows=300)
    served = algorithm(registry, artifact="victim.joblib")  # compiled and sealed here
    donor = IncomeClassifier.from_artifact(artifacts_dir, "donor.joblib", compile=True)

    def readyz() -> dict[str, Any]:
        with mock.patch(
            "apps.ops.views.get_registry", return_value=MLRegistry(artifacts_dir, compile=True)
        ):
            response = api.get("/readyz", **operator_probe)
        assert response.status_code == 200, response.json()
        [check] = response.json()["algorithms"]
        return dict(check)

    assert readyz()["engine"] == "onnx" and "engine_note" not in readyz()
    for path in (compiled.cache_path, compiled.card_path):
        shutil.copy(
            path(artifacts_dir / "donor.joblib", donor.artifact_sha256),
            path(artifacts_dir / served.artifact, served.artifact_sha256),
        )
    check = readyz()
    assert check["engine"] == "onnx"
    assert check["engine_note"].startswith("rebuilt from the artifact: ")
    assert "not sealed" in check["engine_note"] or "no seal" in check["engine_note"]
    assert "engine_note" not in readyz()  # rebuilt and sealed: the next worker uses it


# -- what /readyz tells whom --------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("authorization", ["", "Bearer wrong-token", f"Token {TOKEN}"])
def test_readyz_tells_anyone_else_only_that_it_is_ready(
    api: APIClient, demo_registry: MLRegistry, operator_probe: Any, authorization: str
) -> None:
    # Answered before the Host check, to whoever reaches it: it listed every version, the
    # worker's pid and the cache's state.
    headers: dict[str, Any] = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = api.get("/readyz", **headers)
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}
    assert "algorithms" in api.get("/readyz", **operator_probe).json()  # and an operator


@pytest.mark.django_db
def test_readyz_not_ready_tells_anyone_else_only_that(
    api: APIClient, registry: MLRegistry, artifacts_dir: Path, operator_probe: Any
) -> None:
    algorithm(registry, name="trees", artifact="extra_trees.joblib")
    (artifacts_dir / "extra_trees.joblib").unlink()
    response = api.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"error": {"code": "not_ready", "message": "Not ready."}}
    detailed = api.get("/readyz", **operator_probe).json()["error"]
    assert "extra_trees.joblib" in detailed["message"] and detailed["details"]["algorithms"]


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
def test_without_a_metrics_token_only_a_debug_server_shows_the_checks(
    api: APIClient, demo_registry: MLRegistry, settings: Any, debug: bool
) -> None:
    # No token to ask for: nobody reads them in production, `make run` shows them.
    settings.METRICS_TOKEN = ""
    settings.DEBUG = debug
    body = api.get("/readyz", HTTP_AUTHORIZATION="Bearer anything").json()
    assert ("algorithms" in body and "pid" in body) == debug
    assert body["status"] == "ready"


@pytest.mark.django_db
def test_why_a_worker_is_not_ready_is_logged_once_until_it_changes(
    api: APIClient,
    registry: MLRegistry,
    artifacts_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The public answer no longer says why: the log does, for the operator.
    from apps.ops import health

    monkeypatch.setattr(health, "_logged", ())  # whatever an earlier test left
    served = algorithm(registry, name="trees", artifact="extra_trees.joblib")
    saved = (artifacts_dir / "extra_trees.joblib").read_bytes()
    (artifacts_dir / "extra_trees.joblib").unlink()
    with caplog.at_level("WARNING", logger="apps.ops.health"):
        for _ in range(3):
            assert api.get("/readyz").status_code == 503
    unready = [r for r in caplog.records if r.name == "apps.ops.health"]
    assert len(unready) == 1 and "extra_trees.joblib" in unready[0].getMessage()
    assert f"algorithm {served.pk} (trees" in unready[0].getMessage()
    (artifacts_dir / "extra_trees.joblib").write_bytes(saved)
    caplog.clear()
    with caplog.at_level("INFO", logger="apps.ops.health"):
        assert api.get("/readyz").status_code == 200
        assert api.get("/readyz").status_code == 200
    assert [r.getMessage() for r in caplog.records if r.name == "apps.ops.health"] == [
        "Ready again."
    ]


@pytest.mark.django_db
def test_the_open_inference_protocols_probes_say_the_same_with_its_codes(
    api: APIClient, registry: MLRegistry, artifacts_dir: Path
) -> None:
    """/v2/health/live and /ready: 200 for true, a 4xx for false, as the protocol says; the
    same checks as /healthz and /readyz, answered before the host check as they are."""
    algorithm(registry, name="forest", artifact="random_forest.joblib")
    assert api.get("/v2/health/live", HTTP_HOST="10.0.0.7").json() == {"live": True}
    ready = api.get("/v2/health/ready", HTTP_HOST="10.0.0.7")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    (artifacts_dir / "random_forest.joblib").unlink()
    from apps.ml.registry import get_registry

    get_registry().retain([])  # as a fresh worker: nothing loaded yet
    not_ready = api.get("/v2/health/ready")
    assert not_ready.status_code == 400 and not_ready.json() == {"ready": False}
    model = api.get("/v2/models/income_classifier/ready")
    assert model.status_code == 400 and "Not ready" in model.json()["error"]
