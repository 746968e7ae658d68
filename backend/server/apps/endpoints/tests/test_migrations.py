"""The migrations: in step with the models, and the hand-written one reverses."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from apps.endpoints.models import MLRequest


@pytest.mark.django_db  # makemigrations reads the applied migrations
def test_the_migrations_record_every_model_change() -> None:
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # SystemExit(1) if not


def _indexes_on_ab_test() -> dict[str, Any]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, MLRequest._meta.db_table)
    return {
        name: c for name, c in constraints.items() if c["index"] and c["columns"] == ["ab_test_id"]
    }


@pytest.mark.django_db(transaction=True)
def test_the_ab_test_index_is_partial_and_its_migration_reverses() -> None:
    assert list(_indexes_on_ab_test()) == ["mlrequest_ab_test_routed"]
    executor = MigrationExecutor(connection)
    executor.migrate([("endpoints", "0003_model_card")])
    assert list(_indexes_on_ab_test()) == ["endpoints_mlrequest_ab_test_id_732c578e"]
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert list(_indexes_on_ab_test()) == ["mlrequest_ab_test_routed"]


@pytest.mark.django_db(transaction=True)
def test_the_signature_migration_fills_the_card_of_rows_registered_before_it() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("endpoints", "0005_feedback_integrity")])
    old = executor.loader.project_state([("endpoints", "0005_feedback_integrity")]).apps
    endpoint = old.get_model("endpoints", "Endpoint").objects.create(name="income_classifier")
    algorithm = old.get_model("endpoints", "MLAlgorithm").objects.create(
        name="old forest", version="1", parent_endpoint=endpoint, wrapper="random_forest",
        artifact="random_forest.joblib", artifact_sha256="0" * 64, sklearn_version="1.0",
        features=[{"name": "age", "type": "number"}],
    )  # fmt: skip
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    from apps.endpoints.models import MLAlgorithm

    row = MLAlgorithm.objects.get(pk=algorithm.pk)
    assert len(row.features) == 14 and row.features[1]["categories"][0] == "Private"
    assert row.outputs == ["label", "probability", "probabilities", "status", "imputed"]
    assert row.classes == ["<=50K", ">50K"] and row.target_column == "income"
