"""The fast log writer: exact values back, ids that are never reused."""

from __future__ import annotations

import json

import pytest
from django.db import transaction

from apps.endpoints import bulk
from apps.endpoints.models import MLRequest
from apps.endpoints.tests.factories import algorithm
from apps.ml.registry import MLRegistry

pytestmark = pytest.mark.django_db


def test_rows_come_back_exactly_as_written(registry: MLRegistry) -> None:
    alg = algorithm(registry)
    awkward = {"occupation": 'Tab\there "quoted" back\\slash\nnew line', "age": "37"}
    rows: list[bulk.Row] = [
        (json.dumps(awkward), '{"label":"<=50K"}', "<=50K", "a\tb\\c\nd", alg.pk, None),
        ('{"age":"1"}', '{"label":">50K"}', ">50K", None, alg.pk, None),
        ('{"age":"2"}', '{"label":">50K"}', ">50K", "\\N", alg.pk, None),
    ]
    with transaction.atomic():
        ids = bulk.insert_requests(rows)
    assert len(set(ids.tolist())) == 3
    first, second, third = (MLRequest.objects.get(pk=pk) for pk in ids.tolist())
    assert first.input_data == awkward and first.feedback == "a\tb\\c\nd"
    assert first.full_response == {"label": "<=50K"} and first.parent_mlalgorithm_id == alg.pk
    assert second.feedback is None and second.response == ">50K"
    assert third.feedback == "\\N"  # a literal backslash-N is text, not NULL
    assert first.created_at is not None


def test_ids_continue_after_rows_made_elsewhere_and_are_never_reused(
    registry: MLRegistry,
) -> None:
    alg = algorithm(registry)
    row: bulk.Row = ("{}", "{}", "<=50K", None, alg.pk, None)
    with transaction.atomic():
        first = bulk.insert_requests([row, row]).tolist()
    made = MLRequest.objects.create(
        input_data={}, full_response={}, response="x", parent_mlalgorithm=alg
    )
    assert made.pk > max(first)
    MLRequest.objects.filter(pk=made.pk).delete()
    with transaction.atomic():
        later = bulk.insert_requests([row]).tolist()
    assert later[0] > made.pk
    after = MLRequest.objects.create(
        input_data={}, full_response={}, response="x", parent_mlalgorithm=alg
    )
    assert after.pk > later[0]


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_run_outside_a_transaction(registry: MLRegistry) -> None:
    alg = algorithm(registry)
    with pytest.raises(RuntimeError, match="must run inside transaction.atomic"):
        bulk.insert_requests([("{}", "{}", "<=50K", None, alg.pk, None)])
    assert MLRequest.objects.count() == 0
