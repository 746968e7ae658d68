"""Status changes: one active status per algorithm, history kept."""

from __future__ import annotations

import threading

import pytest
from django.db import IntegrityError, connection, transaction

from apps.endpoints.catalogue.statuses import set_algorithm_status
from apps.endpoints.models import MLAlgorithmStatus
from apps.endpoints.tests.factories import algorithm
from apps.ml.registry import MLRegistry


@pytest.mark.django_db
def test_a_new_status_deactivates_the_previous_one_and_keeps_history(
    registry: MLRegistry,
) -> None:
    alg = algorithm(registry, status="testing")
    set_algorithm_status(algorithm=alg, status="staging", created_by="ana")
    set_algorithm_status(algorithm=alg, status="production", created_by="bo")
    history = list(alg.statuses.order_by("id").values_list("status", "active", "created_by"))
    assert history == [
        ("testing", False, "tests"),
        ("staging", False, "ana"),
        ("production", True, "bo"),
    ]


@pytest.mark.django_db
def test_the_database_refuses_two_active_statuses(registry: MLRegistry) -> None:
    alg = algorithm(registry)
    with pytest.raises(IntegrityError), transaction.atomic():
        MLAlgorithmStatus.objects.create(
            status="testing", active=True, created_by="x", parent_mlalgorithm=alg
        )


@pytest.mark.django_db(transaction=True)
def test_concurrent_status_changes_leave_exactly_one_active(registry: MLRegistry) -> None:
    alg = algorithm(registry)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def change(status: str) -> None:
        try:
            barrier.wait()
            set_algorithm_status(algorithm=alg, status=status, created_by="t")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=change, args=(s,))
        for s in ("testing", "staging", "production", "testing")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert alg.statuses.count() == 5
    assert alg.statuses.filter(active=True).count() == 1
