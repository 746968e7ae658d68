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


@pytest.mark.django_db(transaction=True)
def test_the_tally_migration_counts_the_feedback_logged_before_it_and_reverses() -> None:
    before = [("endpoints", "0006_model_signature")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    endpoint = old.get_model("endpoints", "Endpoint").objects.create(name="e")
    MLAlgorithm, MLRequest = (old.get_model("endpoints", m) for m in ("MLAlgorithm", "MLRequest"))
    classifier, regressor = (
        MLAlgorithm.objects.create(name=name, version="1", parent_endpoint=endpoint, task=task)
        for name, task in (("c", "classification"), ("r", "regression"))
    )
    for algorithm, response, given in [
        (classifier, "a", "a"), (classifier, "a", "b"), (classifier, "b", None),
        (regressor, "1.5", "2.0"), (regressor, "3.0", "1.0"), (regressor, "2.0", None),
    ]:  # fmt: skip
        MLRequest.objects.create(
            input_data={}, full_response={}, response=response, feedback=given,
            parent_mlalgorithm=algorithm,
        )  # fmt: skip
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    from apps.endpoints.serving import selectors

    counts = selectors.feedback_counts()
    assert counts == selectors.feedback_counts_by_scan()
    assert [(c.name, c.given, c.correct, c.absolute_error) for c in counts] == [
        ("c", 2, 1, 0.0),
        ("r", 2, 0, 2.5),
    ]
    executor = MigrationExecutor(connection)
    executor.migrate(before)  # drops the table
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert selectors.feedback_counts() == counts
