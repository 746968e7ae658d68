"""The admin's request log at any size: no full count, filters and search from indexes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.endpoints.models import MLAlgorithm, MLRequest
from apps.endpoints.tests.factories import log_rows

URL = "/admin/endpoints/mlrequest/"


@pytest.fixture
def admin_client_(client: Client, django_user_model: type[User]) -> Client:
    client.force_login(django_user_model.objects.create_superuser("admin", "a@b.c", "pw"))
    return client


def listed(admin_client_: Client, query: str = "") -> list[int]:
    page = admin_client_.get(URL + query)
    assert page.status_code == 200
    return [r.pk for r in page.context["cl"].result_list]


def test_the_filters_and_the_search_by_id(
    admin_client_: Client, two: tuple[MLAlgorithm, MLAlgorithm]
) -> None:
    forest, trees = two
    old = log_rows(forest, 2)
    MLRequest.objects.filter(pk__in=[r.pk for r in old]).update(
        created_at=timezone.now() - timedelta(days=40)
    )
    recent = log_rows(forest, 2, feedback=">50K")
    other = log_rows(trees, 1)
    assert listed(admin_client_) == [r.pk for r in [*old, *recent, *other]][::-1]
    assert admin_client_.get(URL).context["cl"].result_count == 5  # exact when small
    assert set(listed(admin_client_, "?created=older")) == {r.pk for r in old}
    assert set(listed(admin_client_, "?created=day")) == {r.pk for r in [*recent, *other]}
    assert set(listed(admin_client_, "?has_feedback=yes")) == {r.pk for r in recent}
    assert set(listed(admin_client_, "?has_feedback=no")) == {r.pk for r in [*old, *other]}
    assert listed(admin_client_, f"?parent_mlalgorithm__id__exact={trees.pk}") == [other[0].pk]
    assert listed(admin_client_, f"?q={recent[1].pk}") == [recent[1].pk]
    assert listed(admin_client_, "?q=abc") == []
    # Sorting by a column without an index is not offered (the response column's was).
    assert listed(admin_client_, "?o=3") == listed(admin_client_)


def test_on_postgresql_a_large_log_is_counted_from_the_planners_estimate(
    admin_client_: Client, grown_log: dict[str, int]
) -> None:
    with CaptureQueriesContext(connection) as queries:
        page = admin_client_.get(URL)
    assert page.status_code == 200
    sql = [q["sql"].upper() for q in queries.captured_queries]
    sql = [q for q in sql if "ENDPOINTS_MLREQUEST" in q]
    # One count, of at most 10,000 rows; nothing that reads the whole table.
    counts = [q for q in sql if "COUNT(" in q]
    assert len(counts) == 1 and "LIMIT 10000" in counts[0], sql
    assert not [q for q in sql if "DISTINCT" in q], sql
    count = page.context["cl"].result_count
    assert 20_000 < count < 45_000, count  # the planner's estimate: no COUNT ran
    # Filtered down to a few rows, the count is exact again.
    few = admin_client_.get(URL + f"?parent_mlalgorithm__id__exact={grown_log['algorithm']}")
    assert (
        few.context["cl"].result_count
        == MLRequest.objects.filter(parent_mlalgorithm_id=grown_log["algorithm"]).count()
    )
    # Emptied since the statistics were taken, the log is counted, not estimated: the
    # planner would still say 30,000.
    MLRequest.objects.filter(pk__gt=MLRequest.objects.order_by("pk")[2].pk).delete()
    assert admin_client_.get(URL).context["cl"].result_count == 3
