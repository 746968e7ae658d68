"""Reads of the request log: who may read which rows, the log's filters, and the feedback
counted per algorithm."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.db.models import Count, F, Q, QuerySet, Sum
from django.utils.dateparse import parse_datetime
from django.utils.timezone import is_aware, make_aware

from apps.core.errors import InvalidInput
from apps.endpoints import policy
from apps.endpoints.experiments.evaluation import absolute_error
from apps.endpoints.models import FeedbackTally, MLAlgorithm, MLAlgorithmStatus, MLRequest, Task


def visible_requests(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[MLRequest]:
    """The logged requests ``user`` may read: all of them for staff allowed to view them,
    a user's own otherwise, none for anonymous clients (what they sent can be personal
    data, and ids are consecutive)."""
    # The user's name is in every row of the list: joined, not one query per row.
    requests = MLRequest.objects.select_related("user")
    if policy.may(user, policy.READ_ANY_REQUEST):
        return requests.all()
    if user.is_authenticated:
        return requests.filter(user_id=user.pk)
    return MLRequest.objects.none()


# The log's filters (``GET /api/v1/mlrequests?...``). Each one is served by an index, so a
# page costs the same at ten million rows as at ten (tests/apis/test_request_log.py checks
# the plans on PostgreSQL): endpoint and status become a list of algorithm ids, which the
# (parent_mlalgorithm, id) index serves.
REQUEST_FILTERS = (
    "algorithm",
    "endpoint",
    "status",
    "ab_test",
    "has_feedback",
    "created_after",
    "created_before",
)


def filter_requests(
    requests: QuerySet[MLRequest], params: Mapping[str, str]
) -> QuerySet[MLRequest]:
    """``requests`` narrowed by the filters in ``params``; a value that cannot be one
    raises InvalidInput naming the parameter."""
    problems: dict[str, list[str]] = {}

    def number(name: str) -> int | None:
        text = params.get(name)
        if text is None or text == "":
            return None
        # ASCII: "²".isdigit() is true, and int() reads the digits of any script.
        if not (text.isascii() and text.isdigit()):
            problems[name] = [f"An id is a whole number, got '{text[:50]}'."]
            return None
        return int(text)

    def moment(name: str) -> datetime | None:
        text = params.get(name)
        if not text:
            return None
        try:  # a well-formed but impossible time (month 13) raises
            parsed = parse_datetime(text)
        except ValueError:
            parsed = None
        if parsed is None:
            try:
                day = date.fromisoformat(text)
            except ValueError:
                problems[name] = [f"A date or an ISO 8601 time is needed, got '{text[:50]}'."]
                return None
            parsed = datetime(day.year, day.month, day.day)
        return parsed if is_aware(parsed) else make_aware(parsed)

    algorithm, ab_test = number("algorithm"), number("ab_test")
    after, before = moment("created_after"), moment("created_before")
    status = params.get("status") or None
    if status is not None and status not in MLAlgorithmStatus.Status.values:
        choices = ", ".join(MLAlgorithmStatus.Status.values)
        problems["status"] = [f"'{status[:50]}' is not a status; one of {choices}."]
    feedback = params.get("has_feedback") or None
    if feedback is not None and feedback.lower() not in ("true", "false"):
        problems["has_feedback"] = [f"true or false, got '{feedback[:50]}'."]
    if problems:
        raise InvalidInput("Some filters of the log are not valid; see details.", details=problems)

    if algorithm is not None:
        requests = requests.filter(parent_mlalgorithm_id=algorithm)
    endpoint = params.get("endpoint") or None
    if endpoint is not None or status is not None:
        algorithms = MLAlgorithm.objects.all()
        if endpoint is not None:
            algorithms = algorithms.filter(parent_endpoint__name=endpoint)
        if status is not None:
            algorithms = algorithms.filter(statuses__active=True, statuses__status=status)
        # A list of ids, not a subquery: the planner then walks the index per id.
        ids = list(algorithms.values_list("pk", flat=True))
        requests = requests.filter(parent_mlalgorithm_id__in=ids)
    if ab_test is not None:
        requests = requests.filter(ab_test_id=ab_test)
    if feedback is not None:
        requests = requests.filter(feedback__isnull=feedback.lower() == "false")
    if after is not None:
        requests = _created_after(requests, after)
    if before is not None:
        requests = _created_before(requests, before)
    return requests


# Ids and times grow together, but not exactly: a row's id is drawn before its time is
# taken, so writers running at once can interleave them by a few rows (a batch's whole
# block of ids shares one time). A time bound is turned into an id bound this much wider.
_ID_DISORDER = 10_000


def _created_before(requests: QuerySet[MLRequest], moment: datetime) -> QuerySet[MLRequest]:
    """``created_at < moment``, newest first. Alone, the planner walks the primary key
    from the newest row and skips every row after ``moment``: 1.1 s at 10M rows for a
    moment in the middle (bench/log_scale.py). One probe of the created_at index finds
    the last row before ``moment``; the page then starts from its id."""
    last = _nearest_id(created_at__lt=moment, newest=True)
    if last is None:
        return requests.none()
    return requests.filter(created_at__lt=moment, pk__lte=last + _ID_DISORDER)


def _created_after(requests: QuerySet[MLRequest], moment: datetime) -> QuerySet[MLRequest]:
    """``created_at >= moment``: bounded below by the first row at or after ``moment``, so
    a range with few rows (or none) does not walk the whole primary key to find out."""
    first = _nearest_id(created_at__gte=moment, newest=False)
    if first is None:
        return requests.none()
    return requests.filter(created_at__gte=moment, pk__gte=first - _ID_DISORDER)


def _nearest_id(*, newest: bool, **bound: datetime) -> int | None:
    """The id of the newest (or oldest) row within ``bound``: one probe of the created_at
    index."""
    order = "-created_at" if newest else "created_at"
    found: int | None = (
        MLRequest.objects.filter(**bound).order_by(order).values_list("pk", flat=True).first()
    )
    return found


@dataclass(frozen=True)
class FeedbackCounts:
    """One algorithm's feedback: how many logged requests have it, how many of those it
    equals (the response's text), and for a regressor the sum of |feedback - prediction|."""

    algorithm_id: int
    endpoint: str
    name: str
    version: str
    task: str
    given: int
    correct: int
    absolute_error: float  # 0 for a classifier


_ALGORITHM = ("parent_endpoint__name", "name", "version", "task")


def feedback_counts() -> list[FeedbackCounts]:
    """Per algorithm with feedback, its counts from the tally (tally.py): one query on a
    row per algorithm, whatever the size of the request log."""
    rows = (
        FeedbackTally.objects.filter(given__gt=0)
        .order_by("algorithm_id")
        .values_list(
            "algorithm_id",
            *(f"algorithm__{key}" for key in _ALGORITHM),
            "given",
            "correct",
            "absolute_error",
        )
    )
    return [FeedbackCounts(*row) for row in rows]


def feedback_counts_by_scan() -> list[FeedbackCounts]:
    """``feedback_counts`` computed from the request log itself: two aggregate queries that
    read every request with feedback (1.3 s at 1M rows on PostgreSQL, in
    bench/metrics_bench.py). What /metrics ran before the tally; now the reference that
    rebuilds and checks it (``manage.py recount_feedback``, the tests, the bench)."""
    given = MLRequest.objects.filter(feedback__isnull=False).order_by()
    group = ["parent_mlalgorithm", *(f"parent_mlalgorithm__{key}" for key in _ALGORITHM)]
    counts = {"n": Count("id"), "right": Count("id", filter=Q(feedback=F("response")))}
    # Only a regressor's responses and feedback are numbers (feedback.check_value).
    classified = given.exclude(parent_mlalgorithm__task=Task.REGRESSION).values(*group)
    regressed = given.filter(parent_mlalgorithm__task=Task.REGRESSION).values(*group)
    rows = [
        *classified.annotate(**counts),
        *regressed.annotate(**counts, error=Sum(absolute_error())),
    ]
    found = [
        FeedbackCounts(
            algorithm_id=row["parent_mlalgorithm"],
            endpoint=row["parent_mlalgorithm__parent_endpoint__name"],
            name=row["parent_mlalgorithm__name"],
            version=row["parent_mlalgorithm__version"],
            task=row["parent_mlalgorithm__task"],
            given=row["n"],
            correct=row["right"],
            absolute_error=float(row.get("error") or 0.0),
        )
        for row in rows
    ]
    return sorted(found, key=lambda counts: counts.algorithm_id)


# Up to this many rows a count is exact: counting them costs a few ms, and a small number
# that is off looks wrong. Past it, PostgreSQL's estimate: counting ten million rows exactly
# takes seconds, for a number nobody reads to the unit.
EXACT_COUNT_BELOW = 10_000


def estimated_count(queryset: QuerySet[Any]) -> int:
    """How many rows ``queryset`` has: exact up to ``EXACT_COUNT_BELOW``; past that, the
    planner's estimate on PostgreSQL (never less than the rows counted), the exact count
    on other databases."""
    queryset = queryset.order_by()
    # Counted, but reading no more than the limit: the planner's statistics can be stale
    # (a table emptied since its last ANALYZE is still "30,000 rows" to it).
    bounded = queryset[:EXACT_COUNT_BELOW].count()
    if bounded < EXACT_COUNT_BELOW:
        return bounded
    if connection.vendor != "postgresql":
        return queryset.count()
    sql, params = queryset.values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return max(int(plan[0]["Plan"]["Plan Rows"]), EXACT_COUNT_BELOW)
