"""Reads: the queries the API and the services (catalogue, serving, ab_testing, feedback) share."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, PermissionsMixin
from django.db import connection
from django.db.models import Count, F, FloatField, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import Abs, Cast
from django.utils.dateparse import parse_datetime
from django.utils.timezone import is_aware, make_aware

from apps.core.errors import AlgorithmNotFound, EndpointNotFound, InvalidInput
from apps.endpoints.models import (
    ABTest,
    Endpoint,
    FeedbackTally,
    MLAlgorithm,
    MLAlgorithmStatus,
    MLRequest,
    Task,
)


def algorithms_with_current_status() -> QuerySet[MLAlgorithm]:
    """Algorithms with their active status prefetched as ``active_statuses`` (0 or 1 row),
    so a list costs two queries whatever its length."""
    active = MLAlgorithmStatus.objects.filter(active=True)
    return MLAlgorithm.objects.select_related("parent_endpoint").prefetch_related(
        Prefetch("statuses", queryset=active, to_attr="active_statuses")
    )


def current_status(algorithm: MLAlgorithm) -> MLAlgorithmStatus | None:
    prefetched = getattr(algorithm, "active_statuses", None)
    if prefetched is not None:
        return prefetched[0] if prefetched else None
    return algorithm.statuses.filter(active=True).first()


# (endpoint, status, version) -> (expiry on time.monotonic(), algorithms)
_selection_cache: dict[tuple[str, str, str | None], tuple[float, list[MLAlgorithm]]] = {}


def algorithms_for_prediction(
    *, endpoint_name: str, status: str, version: str | None = None
) -> list[MLAlgorithm]:
    """The algorithms of ``endpoint_name`` whose active status is ``status``; raises a 404
    error that says which part did not match.

    Remembered for ``PREDICT_CACHE_SECONDS`` per process: building and running this query
    cost more than the compiled model itself. A status change made in this process clears
    the cache at once (``forget_selections``); other workers see it within the TTL."""
    key = (endpoint_name, status, version)
    ttl = settings.PREDICT_CACHE_SECONDS
    if ttl > 0:
        cached = _selection_cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
    found = _algorithms_for_prediction(endpoint_name=endpoint_name, status=status, version=version)
    if ttl > 0:
        _selection_cache[key] = (time.monotonic() + ttl, found)
    return found


def forget_selections() -> None:
    _selection_cache.clear()


def _algorithms_for_prediction(
    *, endpoint_name: str, status: str, version: str | None
) -> list[MLAlgorithm]:
    candidates = MLAlgorithm.objects.filter(
        parent_endpoint__name=endpoint_name, statuses__status=status, statuses__active=True
    )
    if version is not None:
        candidates = candidates.filter(version=version)
    found = list(candidates.order_by("id"))
    if found:
        return found
    check_endpoint(endpoint_name)
    wanted = f"status '{status}'" + (f" and version '{version}'" if version is not None else "")
    raise AlgorithmNotFound(f"Endpoint '{endpoint_name}' has no algorithm with {wanted}.")


def check_endpoint(endpoint_name: str) -> None:
    """Raise ``EndpointNotFound`` unless an endpoint of this name exists."""
    if not Endpoint.objects.filter(name=endpoint_name).exists():
        raise EndpointNotFound(f"No endpoint named '{endpoint_name}'.")


def sole_endpoint_name() -> str:
    """The name of the only endpoint, for clients that leave ``endpoint`` out."""
    names = list(Endpoint.objects.values_list("name", flat=True)[:2])
    if len(names) == 1:
        return names[0]
    if not names:
        raise EndpointNotFound("There are no endpoints yet.")
    raise InvalidInput(
        "There is more than one endpoint; name one.",
        details={"endpoint": ["Required when more than one endpoint exists."]},
    )


# -- the request log ---------------------------------------------------------------------


def is_staff_with(user: AbstractBaseUser | AnonymousUser, permission: str) -> bool:
    """Whether ``user`` is staff and holds ``permission`` (as the admin would ask)."""
    return bool(
        user.is_authenticated
        and getattr(user, "is_staff", False)
        and isinstance(user, PermissionsMixin)  # a user model without permissions has none
        and user.has_perm(permission)
    )


def can_read_whole_log(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Staff allowed to view requests (as in the admin) read every request."""
    return is_staff_with(user, "endpoints.view_mlrequest")


def visible_requests(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[MLRequest]:
    """The logged requests ``user`` may read: all of them for staff allowed to view them,
    a user's own otherwise, none for anonymous clients (what they sent can be personal
    data, and ids are consecutive)."""
    # The user's name is in every row of the list: joined, not one query per row.
    requests = MLRequest.objects.select_related("user")
    if can_read_whole_log(user):
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
        if not text.isdigit():
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


# -- feedback per algorithm -------------------------------------------------------------


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


# -- A/B tests ---------------------------------------------------------------------------


def running_abtest(*, endpoint_name: str) -> ABTest | None:
    """The endpoint's running A/B test with both arms (there is at most one)."""
    return (
        ABTest.objects.select_related("parent_mlalgorithm_1", "parent_mlalgorithm_2")
        .filter(
            state=ABTest.State.RUNNING, parent_mlalgorithm_1__parent_endpoint__name=endpoint_name
        )
        .first()
    )


def absolute_error(prefix: str = "") -> Abs:
    """|feedback - response| of a request (``prefix``: the path to it, e.g. ``requests__``):
    a regressor's prediction and its feedback are numbers stored as text (feedback.py)."""
    return Abs(Cast(f"{prefix}feedback", FloatField()) - Cast(f"{prefix}response", FloatField()))


def _per_arm(abtest: ABTest, **aggregates: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per arm, in one query: the requests this test routed, those with feedback, the
    distinct clients who gave it, and ``aggregates`` (None for an arm without requests)."""
    has_feedback = Q(feedback__isnull=False)
    rows = {
        row["parent_mlalgorithm"]: row
        for row in abtest.requests.order_by()
        .values("parent_mlalgorithm")
        .annotate(
            requests=Count("id"),
            with_feedback=Count("id", filter=has_feedback),
            feedback_clients=Count("feedback_by", filter=has_feedback, distinct=True),
            **aggregates,
        )
    }
    empty = {"requests": 0, "with_feedback": 0, "feedback_clients": 0}

    def arm(pk: int) -> dict[str, Any]:
        return dict(rows.get(pk) or {**empty, **dict.fromkeys(aggregates)})

    return arm(abtest.parent_mlalgorithm_1_id), arm(abtest.parent_mlalgorithm_2_id)


@dataclass(frozen=True)
class ArmCounts:
    requests: int  # routed to the arm by the test
    with_feedback: int  # of those, how many carry feedback
    correct: int  # of those, how many predicted the feedback
    feedback_clients: int  # how many distinct clients gave that feedback


def abtest_arm_counts(*, abtest: ABTest) -> tuple[ArmCounts, ArmCounts]:
    """A classifier test's arms: per arm the requests, with feedback, correct, and the
    distinct clients who gave the feedback; one query."""
    right = Q(feedback__isnull=False) & Q(feedback=F("response"))
    first, second = _per_arm(abtest, correct=Count("id", filter=right))

    def counts(row: dict[str, Any]) -> ArmCounts:
        return ArmCounts(
            requests=row["requests"],
            with_feedback=row["with_feedback"],
            correct=row["correct"] or 0,
            feedback_clients=row["feedback_clients"],
        )

    return counts(first), counts(second)


@dataclass(frozen=True)
class ArmErrors:
    requests: int
    with_feedback: int
    feedback_clients: int
    total: float  # sum of |prediction - feedback| over requests with feedback
    squares: float  # sum of their squares


def abtest_arm_errors(*, abtest: ABTest) -> tuple[ArmErrors, ArmErrors]:
    """A regressor test's arms: per arm the requests, those with feedback, the distinct
    clients who gave it, and the sums of absolute and squared errors; one query."""
    has_feedback = Q(feedback__isnull=False)
    error = absolute_error()
    first, second = _per_arm(
        abtest,
        total=Sum(error, filter=has_feedback),
        squares=Sum(error * error, filter=has_feedback),
    )

    def errors(row: dict[str, Any]) -> ArmErrors:
        return ArmErrors(
            requests=row["requests"],
            with_feedback=row["with_feedback"],
            feedback_clients=row["feedback_clients"],
            total=float(row["total"] or 0.0),
            squares=float(row["squares"] or 0.0),
        )

    return errors(first), errors(second)


def abtest_feedback_clients(*, abtest: ABTest) -> int:
    """How many distinct clients gave the feedback of this test's requests (a client who
    gave feedback on both arms counts once)."""
    counted = abtest.requests.filter(feedback__isnull=False).order_by()
    return int(counted.aggregate(n=Count("feedback_by", distinct=True))["n"])


def abtests_with_live_counts() -> QuerySet[ABTest]:
    """A/B tests with both arms and, per arm, requests with feedback (``feedback_1``, ...),
    correct ones (``correct_1``, ...) and, for regressors, the sum of absolute errors
    (``error_1``, ...), counted now: one query for a whole list."""
    has_feedback = Q(requests__feedback__isnull=False)
    right = has_feedback & Q(requests__feedback=F("requests__response"))
    # Only a regressor's feedback is a number (both arms have the task of arm 1).
    numeric = has_feedback & Q(parent_mlalgorithm_1__task=Task.REGRESSION)
    counts: dict[str, Count | Sum] = {}
    for arm in (1, 2):
        on_arm = Q(requests__parent_mlalgorithm=F(f"parent_mlalgorithm_{arm}"))
        counts[f"feedback_{arm}"] = Count("requests", filter=has_feedback & on_arm)
        counts[f"correct_{arm}"] = Count("requests", filter=right & on_arm)
        counts[f"error_{arm}"] = Sum(absolute_error("requests__"), filter=numeric & on_arm)
    return ABTest.objects.select_related("parent_mlalgorithm_1", "parent_mlalgorithm_2").annotate(
        **counts
    )


def find_algorithm(*, endpoint_name: str, name: str, version: str) -> MLAlgorithm | None:
    return MLAlgorithm.objects.filter(
        parent_endpoint__name=endpoint_name, name=name, version=version
    ).first()


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
