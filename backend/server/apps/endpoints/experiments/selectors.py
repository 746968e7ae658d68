"""Reads of A/B tests: the running test of an endpoint, and each arm's counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, F, Q, QuerySet, Sum

from apps.endpoints.experiments.evaluation import absolute_error
from apps.endpoints.models import ABTest, Task


def running_abtest(*, endpoint_name: str) -> ABTest | None:
    """The endpoint's running A/B test with both arms (there is at most one)."""
    return (
        ABTest.objects.select_related("parent_mlalgorithm_1", "parent_mlalgorithm_2")
        .filter(
            state=ABTest.State.RUNNING, parent_mlalgorithm_1__parent_endpoint__name=endpoint_name
        )
        .first()
    )


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
