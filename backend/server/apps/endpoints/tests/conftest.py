"""Fixtures of the endpoints app's tests: a request log to read, filter and prune."""

from __future__ import annotations

import pytest
from django.db import connection

from apps.endpoints.models import ABTest, MLAlgorithm
from apps.endpoints.tests.factories import algorithm
from apps.ml.registry import MLRegistry


@pytest.fixture
def two(registry: MLRegistry, db: None) -> tuple[MLAlgorithm, MLAlgorithm]:
    first = algorithm(registry, name="forest", status="production")
    second = algorithm(
        registry, name="trees", status="staging", endpoint="other", artifact="extra_trees.joblib"
    )
    return first, second


@pytest.fixture
def grown_log(two: tuple[MLAlgorithm, MLAlgorithm]) -> dict[str, int]:
    """30,000 rows shaped like a production log, and the planner's statistics of them:
    almost all from one algorithm over 300 days, a few routed by a test or with feedback."""
    if connection.vendor != "postgresql":
        pytest.skip("the plans are PostgreSQL's (CI runs the suite on it)")
    forest, trees = two
    abtest = ABTest.objects.create(
        title="t", created_by="tests", parent_mlalgorithm_1=forest, parent_mlalgorithm_2=trees
    )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO endpoints_mlrequest (input_data, full_response, response, feedback,
                created_at, parent_mlalgorithm_id, ab_test_id)
            SELECT '{}', '{}', '<=50K', CASE WHEN n %% 100 = 0 THEN '>50K' END,
                now() - (30000 - n) * interval '864 seconds',
                CASE WHEN n %% 300 = 0 THEN %s ELSE %s END,
                CASE WHEN n %% 600 = 0 THEN %s END
            FROM generate_series(1, 30000) AS n
            """,
            [trees.pk, forest.pk, abtest.pk],
        )
        cursor.execute("ANALYZE endpoints_mlrequest")
    return {"algorithm": trees.pk, "ab_test": abtest.pk}
