"""The model card of each algorithm, in the API and the admin."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from apps.endpoints.models import MLAlgorithm
from apps.ml.registry import MLRegistry, set_registry

pytestmark = pytest.mark.django_db


def test_the_api_shows_the_signature_metrics_library_hash_and_load_time(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    [forest, _] = api.get("/api/v1/mlalgorithms").json()["results"][::-1]
    assert forest["name"] == "random forest"
    age, workclass = forest["features"][:2]
    assert age == {"name": "age", "type": "number", "required": False, "missing": ["", "?"]}
    assert workclass["type"] == "category" and workclass["unknown"] == "error"
    assert workclass["categories"][0] == "Private" and not workclass["required"]
    assert len(forest["features"]) == 14
    assert forest["task"] == "classification" and forest["classes"] == ["<=50K", ">50K"]
    assert forest["outputs"] == ["label", "probability", "probabilities", "status", "imputed"]
    assert forest["example"] and set(forest["example"][0]) <= {
        f["name"] for f in forest["features"]
    }
    assert forest["serving"]["engine"] == "sklearn" and forest["target_column"] == "income"
    assert forest["metrics"] == {"rows": 3000}  # the tiny stand-in's; the demo's has accuracy
    assert forest["sklearn_version"] and len(forest["artifact_sha256"]) == 64
    assert forest["loaded_at"] is None  # no request has needed it yet in this process
    demo_registry.get(MLAlgorithm.objects.get(pk=forest["id"]))
    loaded = api.get(f"/api/v1/mlalgorithms/{forest['id']}").json()["loaded_at"]
    assert loaded == demo_registry.loaded_at[forest["id"]].isoformat()


def test_the_load_time_is_null_until_this_process_loads_the_model(
    api: APIClient, demo_registry: MLRegistry, artifacts_dir: Path
) -> None:
    fresh = MLRegistry(artifacts_dir)
    previous = set_registry(fresh)
    try:
        [algorithm] = [
            a
            for a in api.get("/api/v1/mlalgorithms").json()["results"]
            if a["name"] == "random forest"
        ]
        assert algorithm["loaded_at"] is None
        fresh.get(MLAlgorithm.objects.get(pk=algorithm["id"]))
        assert api.get(f"/api/v1/mlalgorithms/{algorithm['id']}").json()["loaded_at"]
    finally:
        set_registry(previous)


def test_the_demo_models_record_their_accuracy_on_adult_test(
    demo_artifacts: Path, registry: MLRegistry
) -> None:
    from apps.endpoints.catalogue.register import register_model

    algorithm = register_model(
        artifact=demo_artifacts / "random_forest.joblib",
        file_name="demo_forest.joblib",  # beside the tiny stand-in of the same name
        endpoint_name="income_classifier",
        name="random forest",
        version="0.0.1",
        allow_pickle=True,
        kind="random_forest",
    ).algorithm
    assert 0.8 < algorithm.metrics["accuracy_adult_test"] < 0.95


def test_the_admin_change_page_shows_the_card(
    client: Client, django_user_model: type[User], demo_registry: MLRegistry
) -> None:
    client.force_login(django_user_model.objects.create_superuser("admin", "a@b.c", "pw"))
    forest = MLAlgorithm.objects.get(name="random forest")
    page = client.get(f"/admin/endpoints/mlalgorithm/{forest.pk}/change/").content.decode()
    assert "age (number, optional), workclass (category, optional)" in page
    assert "classification: label, probability, probabilities, status, imputed" in page
    assert "rows: 3000" in page
    assert forest.artifact_sha256 in page
    assert "loaded in this process at" in page.lower()
