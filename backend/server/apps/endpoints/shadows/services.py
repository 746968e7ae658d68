"""A shadow's life: start, the counters its copies and feedback add, a look at each
feedback, and its end (stop, promote, or an A/B test from it). Each end happens once:
the shadow's row is locked and a second end finds it ended (``ShadowEnded``, 409)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Least
from django.utils import timezone

from apps.core.errors import Conflict, InvalidInput, NotFound, ShadowEnded
from apps.endpoints.catalogue import statuses
from apps.endpoints.experiments import ab_testing
from apps.endpoints.experiments.evaluation import observation
from apps.endpoints.experiments.selectors import running_abtest
from apps.endpoints.experiments.sequential import MIN_COUNT
from apps.endpoints.models import (
    ABTest,
    MLAlgorithm,
    MLAlgorithmStatus,
    Shadow,
    ShadowAnswer,
    Task,
)
from apps.endpoints.shadows import comparison, selectors

Status = MLAlgorithmStatus.Status
State = Shadow.State
_INTEGER_COUNTS = frozenset(
    {"copies", "dropped", "failed", "agreed", "pairs", "only_production_right", "only_shadow_right"}
)


# -- start -------------------------------------------------------------------------------


@transaction.atomic
def create(
    *,
    candidate: MLAlgorithm,
    created_by: str,
    share: float = 1.0,
    alpha: float = 0.05,
    planned_feedback: int | None = None,
) -> Shadow:
    """Start a shadow: ``candidate`` gets status ``shadow`` (its previous one remembered)
    and scores ``share`` of the endpoint's single predictions from now on."""
    # One shadow per endpoint: concurrent starts serialise on the endpoint's row.
    statuses.lock_endpoint(candidate.parent_endpoint_id)
    previous, baseline = check_start(
        candidate=candidate, share=share, alpha=alpha, planned_feedback=planned_feedback
    )
    shadow = Shadow.objects.create(
        endpoint_id=candidate.parent_endpoint_id,
        candidate=candidate,
        share=share,
        alpha=alpha,
        planned_feedback=planned_feedback,
        previous_status=previous,
        baseline=[a.pk for a in baseline],
        created_by=created_by,
    )
    statuses.set_algorithm_status(algorithm=candidate, status=Status.SHADOW, created_by=created_by)
    _forget_on_commit()
    return shadow


def check_start(
    *,
    candidate: MLAlgorithm,
    share: float = 1.0,
    alpha: float = 0.05,
    planned_feedback: int | None = None,
) -> tuple[str, list[MLAlgorithm]]:
    """Why ``candidate`` cannot start a shadow (an ``InvalidInput`` or ``Conflict``), else
    its status now and the versions it would be compared with. ``create`` asks under the
    endpoint's lock; the admin's form asks first, to show the reason on the form."""
    if not 0 < share <= 1:
        raise InvalidInput(
            f"share must be greater than 0 and at most 1; got {share}.",
            details={"share": ["Must be in (0, 1]."]},
        )
    if not 0 < alpha < 1:
        raise InvalidInput(
            f"alpha must be between 0 and 1 (exclusive); got {alpha}.",
            details={"alpha": ["Must be greater than 0 and less than 1."]},
        )
    if planned_feedback is not None and planned_feedback < MIN_COUNT:
        raise InvalidInput(
            f"planned_feedback must be at least {MIN_COUNT}: no look decides before that many "
            f"pairs; got {planned_feedback}.",
            details={"planned_feedback": [f"At least {MIN_COUNT}."]},
        )
    running = Shadow.objects.filter(endpoint_id=candidate.parent_endpoint_id, state=State.RUNNING)
    if running.exists():
        raise Conflict(
            "This endpoint already has a running shadow; stop it first (one at a time).",
            details={"shadow": running.values_list("pk", flat=True)[0]},
        )
    previous = statuses.status_of(candidate)
    if previous in statuses.SERVING:
        raise InvalidInput(
            f"{candidate.name} {candidate.version} serves clients ({previous}): a shadow is "
            "a version that does not, compared with those that do.",
            details={"candidate": [f"Has status {previous}."]},
        )
    baseline = _with_status(candidate.parent_endpoint_id, statuses.SERVING)
    if not baseline:
        raise Conflict(
            "The endpoint has no version in production (or in an A/B test) to compare with."
        )
    for serving in baseline:
        _check_alike(serving, candidate)
    return previous, baseline


def _check_alike(serving: MLAlgorithm, candidate: MLAlgorithm) -> None:
    """Both answer the same requests and are scored on the same feedback: the same task
    and classes (features may differ; each takes its own)."""
    for what, first, second in (
        ("task", serving.task, candidate.task),
        ("classes", list(serving.classes), list(candidate.classes)),
    ):
        if first != second:
            raise InvalidInput(
                f"A shadow must answer as the version it is compared with; their {what} "
                f"differ ({first} against {second}).",
                details={"candidate": [f"Another {what}: {second}."]},
            )


# -- end ---------------------------------------------------------------------------------


def _end(shadow_id: int, state: str, by: str, reason: str) -> Shadow:
    """Lock the running shadow and record its end; in the caller's transaction."""
    endpoint_id = Shadow.objects.filter(pk=shadow_id).values_list("endpoint_id", flat=True).first()
    if endpoint_id is not None:
        statuses.lock_endpoint(endpoint_id)  # first, as every status write does
    shadow = (
        Shadow.objects.select_for_update(of=("self",))
        .select_related("candidate", "endpoint")
        .filter(pk=shadow_id)
        .first()
    )
    if shadow is None:
        raise NotFound(f"No shadow with id {shadow_id}.")
    if shadow.state != State.RUNNING:
        assert shadow.ended_at is not None  # a database constraint
        raise ShadowEnded(
            f"Shadow {shadow.pk} already ended ({shadow.state}) at "
            f"{shadow.ended_at.isoformat()}; a shadow ends once."
        )
    shadow.state = state
    shadow.ended_at = timezone.now()
    shadow.ended_by = by
    shadow.end_reason = reason
    shadow.save(update_fields=["state", "ended_at", "ended_by", "end_reason"])
    _forget_on_commit()
    return shadow


@transaction.atomic
def stop(*, shadow_id: int, stopped_by: str) -> Shadow:
    """End the shadow; the candidate gets its previous status back."""
    shadow = _end(shadow_id, State.STOPPED, stopped_by, "stopped")
    statuses.restore_status(
        algorithm=shadow.candidate, previous=shadow.previous_status, by=stopped_by
    )
    return shadow


@transaction.atomic
def promote(*, shadow_id: int, promoted_by: str) -> Shadow:
    """End the shadow with its candidate in production, and the production version(s) in
    ``testing``, as an A/B test's stop would. Refused (409) while an A/B test runs on the
    endpoint: that test decides what goes to production."""
    shadow = _end(shadow_id, State.PROMOTED, promoted_by, "promoted")
    if running_abtest(endpoint_name=shadow.endpoint.name) is not None:
        raise Conflict(
            "An A/B test runs on this endpoint: stop it before promoting the shadow.",
        )
    for old in _with_status(shadow.endpoint_id, {Status.PRODUCTION}):
        statuses.set_algorithm_status(algorithm=old, status=Status.TESTING, created_by=promoted_by)
    statuses.set_algorithm_status(
        algorithm=shadow.candidate, status=Status.PRODUCTION, created_by=promoted_by
    )
    return shadow


@transaction.atomic
def start_ab_test(
    *, shadow_id: int, created_by: str, title: str = "", **options: Any
) -> tuple[Shadow, ABTest]:
    """End the shadow into an A/B test of its candidate (arm 2) against the production
    version (arm 1); ``options`` as ``ab_testing.create`` takes them. The candidate's
    previous status is what the test remembers and restores if aborted."""
    shadow = _end(shadow_id, State.AB_TEST, created_by, "an A/B test started from it")
    statuses.restore_status(
        algorithm=shadow.candidate, previous=shadow.previous_status, by=created_by
    )
    production = _with_status(shadow.endpoint_id, {Status.PRODUCTION})
    if len(production) != 1:
        raise Conflict(
            f"An A/B test from a shadow needs one version in production; the endpoint has "
            f"{len(production)}.",
        )
    abtest = ab_testing.create(
        title=title or f"{production[0].name} vs {shadow.candidate.name} (from shadow {shadow.pk})",
        created_by=created_by,
        parent_mlalgorithm_1=production[0],
        parent_mlalgorithm_2=shadow.candidate,
        **options,
    )
    shadow.ab_test = abtest
    shadow.save(update_fields=["ab_test"])
    return shadow, abtest


def _with_status(endpoint_id: int, wanted: Iterable[str]) -> list[MLAlgorithm]:
    """The endpoint's versions whose active status is one of ``wanted``, by id."""
    return list(
        MLAlgorithm.objects.filter(
            parent_endpoint_id=endpoint_id,
            statuses__active=True,
            statuses__status__in=list(wanted),
        ).order_by("pk")
    )


def _forget_on_commit() -> None:
    selectors.forget()
    transaction.on_commit(selectors.forget)


# -- counters ----------------------------------------------------------------------------


def add_counts(shadow_id: int, counts: Mapping[str, float], *, running: bool = True) -> bool:
    """Add ``counts`` to the shadow's counters in one ``UPDATE`` (every process adds its
    own; none writes what it read); only while it runs unless ``running`` is false.
    Whether the row was updated."""
    if not counts:
        return True
    rows = Shadow.objects.filter(pk=shadow_id)
    if running:
        rows = rows.filter(state=State.RUNNING)
    return bool(
        rows.update(
            **{
                name: F(name) + (round(value) if name in _INTEGER_COUNTS else value)
                for name, value in counts.items()
            }
        )
    )


def add_pair(
    counts: dict[str, float],
    production: str,
    shadow: str,
    truth: str,
    *,
    regression: bool,
    sign: int,
) -> None:
    """Add (``sign`` +1) or take out (-1) one pair with feedback ``truth`` (models.Shadow:
    x is 1[right] or |error|; d > 0 where the shadow did better)."""
    x_p = observation(production, truth, regression=regression)
    x_s = observation(shadow, truth, regression=regression)
    d = x_p - x_s if regression else x_s - x_p
    for name, value in (
        ("pairs", 1.0),
        ("sum_d", d),
        ("sum_d2", d * d),
        ("sum_p", x_p),
        ("sum_p2", x_p * x_p),
        ("sum_s", x_s),
        ("sum_s2", x_s * x_s),
        ("only_production_right", float(not regression and x_p > x_s)),
        ("only_shadow_right", float(not regression and x_s > x_p)),
    ):
        counts[name] = counts.get(name, 0.0) + sign * value


def count_pairs(changed: Mapping[int, tuple[str | None, str | None]]) -> None:
    """Feedback changed on these requests (id -> (old, new), None: none), in the caller's
    transaction, which holds their rows' locks (``tally.save``): take each old pair out of
    its running shadow's counters and add the new one; then, once committed, a look."""
    if not changed:
        return
    per_shadow: dict[int, dict[str, float]] = {}
    ids = list(changed)
    for start in range(0, len(ids), 5_000):
        part = ids[start : start + 5_000]
        for pk, shadow_id, shadow_response, production, task in (
            ShadowAnswer.objects.filter(request_id__in=part, shadow__state=State.RUNNING)
            .order_by()
            .values_list(
                "request_id",
                "shadow_id",
                "response",
                "request__response",
                "shadow__candidate__task",
            )
        ):
            old, new = changed[pk]
            counts = per_shadow.setdefault(shadow_id, {})
            regression = task == Task.REGRESSION
            for truth, sign in ((old, -1), (new, +1)):
                if truth is not None:
                    add_pair(
                        counts, production, shadow_response, truth, regression=regression, sign=sign
                    )
    for shadow_id in sorted(per_shadow):  # a fixed order: no two writers deadlock
        add_counts(shadow_id, {k: v for k, v in per_shadow[shadow_id].items() if v})
    if per_shadow:
        shadows = sorted(per_shadow)
        transaction.on_commit(lambda: look(shadows))


# -- looks -------------------------------------------------------------------------------


def look(shadow_ids: Iterable[int]) -> None:
    """What the service does each time pairs with feedback commit: the paired sequence at
    this count, the running minimum of its always-valid p-value, and the first look that
    excluded 0, recorded once (as an A/B test's look)."""
    for shadow in Shadow.objects.filter(
        pk__in=list(shadow_ids), state=State.RUNNING
    ).select_related("candidate"):
        sequence = comparison.sequence(shadow)
        if sequence is None:
            continue
        Shadow.objects.filter(pk=shadow.pk).update(
            min_p_value=Least(F("min_p_value"), sequence["p_value"]), looks=F("looks") + 1
        )
        if sequence["decided"]:
            Shadow.objects.filter(pk=shadow.pk, first_exclusion__isnull=True).update(
                first_exclusion={
                    k: sequence[k] for k in ("n", "estimate", "lower", "upper", "better")
                }
            )
