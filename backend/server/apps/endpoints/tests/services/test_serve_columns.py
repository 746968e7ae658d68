"""``serve`` given a batch of text columns (a CSV body, as MLflow's ``/invocations`` takes
one): each row is logged with its cells, and a column the batch lacks is missing."""

from __future__ import annotations

import pytest

from apps.endpoints.models import MLRequest
from apps.endpoints.serving import pipeline
from apps.endpoints.serving.predict import serve
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db


def served(columns: dict[str, list[str]], rows: int) -> list[MLRequest]:
    batch = pipeline.Batch(size=rows, columns=columns, first_line=2)
    result = serve(endpoint_name="income_classifier", batch=batch, status="production")
    return list(MLRequest.objects.filter(pk__in=result.request_ids).order_by("pk"))


def test_each_row_of_text_columns_is_logged_with_its_cells(demo_registry: MLRegistry) -> None:
    cells = {name: str(value) for name, value in SAMPLE_RECORD.items()}
    rows = served({name: [cell, cell] for name, cell in cells.items()}, 2)
    # Not {}: serve's log names no file's features, and takes the batch's columns.
    assert [row.input_data for row in rows] == [cells, cells]


def test_a_feature_the_columns_lack_is_missing_in_every_row(demo_registry: MLRegistry) -> None:
    cells = {name: [str(value)] for name, value in SAMPLE_RECORD.items() if name != "age"}
    [row] = served(cells, 1)  # the Adult models fill a missing feature in, and say so
    assert "age" not in row.input_data
    assert row.full_response["imputed"] == ["age"]
