"""The A/B test lifecycle: create a test, route its traffic, stop it and decide.

Arm 1 is the incumbent, arm 2 the challenger. While a test runs, both arms have status
``ab_testing`` and requests with that status are routed here (``route``), each one recorded
with the test. Stopping it compares only those requests that carry feedback (``stop``).
The statistics are in ``stats.py``; the rules are documented in docs/ab-tests.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Least
from django.utils import timezone

from apps.core.errors import ABTestStopped, InvalidInput, NotEnoughData, NotFound
from apps.endpoints.catalogue import statuses
from apps.endpoints.catalogue.selectors import algorithms_for_prediction, current_status
from apps.endpoints.experiments import sequential, stats
from apps.endpoints.experiments.selectors import (
    abtest_arm_counts,
    abtest_arm_errors,
    abtest_feedback_clients,
    running_abtest,
)
from apps.endpoints.models import (
    ABTest,
    ABTestTally,
    Endpoint,
    MLAlgorithm,
    MLAlgorithmStatus,
    Task,
)

Status = MLAlgorithmStatus.Status
State = ABTest.State
Mode = ABTest.Mode
_shared_rng = random.Random()


# -- create ------------------------------------------------------------------------------


@transaction.atomic
def create(
    *,
    title: str,
    created_by: str,
    parent_mlalgorithm_1: MLAlgorithm,
    parent_mlalgorithm_2: MLAlgorithm,
    arm_2_share: float = 0.5,
    alpha: float = 0.05,
    require_significance: bool = False,
    mode: str = Mode.SEQUENTIAL,
    planned_feedback: int | None = None,
    auto_stop: bool = False,
) -> ABTest:
    """Start a test: both arms get an active ``ab_testing`` status, and each one's previous
    status is remembered so that an aborted test can restore it. A new test is sequential
    unless asked otherwise (docs/ab-tests.md, "Watching a test")."""
    arm_1, arm_2 = parent_mlalgorithm_1, parent_mlalgorithm_2
    _check_arms(arm_1, arm_2)
    _check_open_interval("arm_2_share", arm_2_share)
    _check_open_interval("alpha", alpha)
    _check_sequential(mode, planned_feedback, auto_stop)
    # Lock the endpoint so that two concurrent creates on it serialise: routing needs at
    # most one running test per endpoint, and the check below must see the other's test.
    Endpoint.objects.select_for_update().only("pk").get(pk=arm_1.parent_endpoint_id)
    _check_no_running_test(arm_1, arm_2)
    abtest = ABTest.objects.create(
        title=title,
        created_by=created_by,
        parent_mlalgorithm_1=arm_1,
        parent_mlalgorithm_2=arm_2,
        arm_2_share=arm_2_share,
        alpha=alpha,
        require_significance=require_significance,
        mode=mode,
        planned_feedback=planned_feedback,
        auto_stop=auto_stop,
        previous_status_1=_status_of(arm_1),
        previous_status_2=_status_of(arm_2),
    )
    for arm in (arm_1, arm_2):
        statuses.set_algorithm_status(
            algorithm=arm, status=Status.AB_TESTING, created_by=created_by
        )
    return abtest


def _check_arms(arm_1: MLAlgorithm, arm_2: MLAlgorithm) -> None:
    if arm_1.pk == arm_2.pk:
        raise InvalidInput(
            "An A/B test compares two different algorithms.",
            details={"parent_mlalgorithm_2": ["Must differ from parent_mlalgorithm_1."]},
        )
    if arm_1.parent_endpoint_id != arm_2.parent_endpoint_id:
        raise InvalidInput(
            "Both algorithms of an A/B test must belong to the same endpoint.",
            details={"parent_mlalgorithm_2": ["Belongs to another endpoint."]},
        )
    # Both arms answer the same requests, and a batch file's answer has one set of
    # columns: a classifier against a regressor, or classifiers of different classes,
    # have no common metric or answer.
    for what, first, second in (
        ("task", arm_1.task, arm_2.task),
        ("classes", list(arm_1.classes), list(arm_2.classes)),
        ("answer fields", list(arm_1.outputs), list(arm_2.outputs)),
    ):
        if first != second:
            raise InvalidInput(
                f"Both algorithms of an A/B test must answer alike; their {what} differ "
                f"({first} against {second}).",
                details={"parent_mlalgorithm_2": [f"Another {what}: {second}."]},
            )


def _check_open_interval(field: str, value: float) -> None:
    if not 0 < value < 1:
        raise InvalidInput(
            f"{field} must be between 0 and 1 (exclusive); got {value}.",
            details={field: ["Must be greater than 0 and less than 1."]},
        )


def _check_sequential(mode: str, planned_feedback: int | None, auto_stop: bool) -> None:
    if mode not in Mode.values:
        raise InvalidInput(
            f"mode must be one of {', '.join(Mode.values)}; got {mode!r}.",
            details={"mode": [f"Not a mode: {mode}."]},
        )
    least = 2 * sequential.MIN_COUNT
    if planned_feedback is not None and planned_feedback < least:
        raise InvalidInput(
            f"planned_feedback must be at least {least} (both arms together: no look decides "
            f"before each arm has {sequential.MIN_COUNT}); got {planned_feedback}.",
            details={"planned_feedback": [f"At least {least}."]},
        )
    if auto_stop and mode != Mode.SEQUENTIAL:
        raise InvalidInput(
            "auto_stop needs mode 'sequential': a fixed-horizon test is valid at one look only.",
            details={"auto_stop": ["Only with mode 'sequential'."]},
        )
    if auto_stop and planned_feedback is None:
        raise InvalidInput(
            "auto_stop needs planned_feedback: where the test gives up without a decision.",
            details={"planned_feedback": ["Required with auto_stop."]},
        )


def _check_no_running_test(arm_1: MLAlgorithm, arm_2: MLAlgorithm) -> None:
    running = ABTest.objects.filter(
        state=State.RUNNING, parent_mlalgorithm_1__parent_endpoint_id=arm_1.parent_endpoint_id
    ).first()
    if running is None:
        return
    in_test = {running.parent_mlalgorithm_1_id, running.parent_mlalgorithm_2_id}
    details = {
        field: [f"Already an arm of running A/B test {running.pk} ('{running.title}')."]
        for field, arm in (("parent_mlalgorithm_1", arm_1), ("parent_mlalgorithm_2", arm_2))
        if arm.pk in in_test
    } or {"parent_endpoint": [f"Running A/B test {running.pk} ('{running.title}')."]}
    raise InvalidInput(
        f"The endpoint already has a running A/B test ({running.pk}, '{running.title}'); "
        "stop it first: an endpoint runs one test at a time.",
        details=details,
    )


def _status_of(algorithm: MLAlgorithm) -> str:
    status = current_status(algorithm)
    return status.status if status else ""


# -- route -------------------------------------------------------------------------------


def route(
    *,
    endpoint_name: str,
    assignment_key: str | None = None,
    rng: random.Random | None = None,
) -> tuple[MLAlgorithm, ABTest | None]:
    """The algorithm that serves a request with status ``ab_testing``, and the test that
    routed it (None when the endpoint runs no test).

    With a running test: arm 2 with probability ``arm_2_share``, drawn from ``rng``, or,
    when the client sent an ``assignment_key``, from a hash of the test and the key, so
    that one key always gets the same arm of one test, in any process. Without a test (an
    operator set statuses by hand): one of the ``ab_testing`` algorithms at random."""
    rng = rng or _shared_rng
    abtest = running_abtest(endpoint_name=endpoint_name)
    if abtest is None:
        candidates = algorithms_for_prediction(
            endpoint_name=endpoint_name, status=Status.AB_TESTING
        )
        return rng.choice(candidates), None
    return pick_arm(abtest, assignment_key=assignment_key, rng=rng), abtest


def pick_arm(abtest: ABTest, *, assignment_key: str | None, rng: random.Random) -> MLAlgorithm:
    """Arm 2 when the key's point (or a random draw) falls below ``arm_2_share``."""
    if assignment_key:
        point = assignment_point(abtest_id=abtest.pk, assignment_key=assignment_key)
    else:
        point = rng.random()
    return (
        abtest.parent_mlalgorithm_2 if point < abtest.arm_2_share else abtest.parent_mlalgorithm_1
    )


def assignment_point(*, abtest_id: int, assignment_key: str) -> float:
    """A number in [0, 1) fixed by the test and the key. SHA-256, not ``hash()``: Python
    salts ``hash()`` per process, so workers would disagree."""
    digest = hashlib.sha256(f"{abtest_id}:{assignment_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# -- evaluate and stop -------------------------------------------------------------------


def evaluate(abtest: ABTest) -> dict[str, Any]:
    """The numbers of the test so far (JSON-ready), on the metric of its task:

    - classifiers: per arm the counts, the accuracy and its 95 % Wilson interval; between
      arms the difference and the p-value (z-test, or Fisher's for small counts);
    - regressors: per arm the mean absolute error and its 95 % t interval; between arms the
      difference and Welch's t-test on the absolute errors.

    Each arm also carries ``metric`` ("accuracy" or "mae") and ``value``; the comparison,
    ``improvement``: how much better arm 2 is (positive) or worse, on that metric."""
    regression = abtest.parent_mlalgorithm_1.task == Task.REGRESSION
    arms, comparison = (_regression if regression else _classification)(abtest)
    summary = {
        "task": Task.REGRESSION if regression else Task.CLASSIFICATION,
        "metric": "mae" if regression else "accuracy",
        "mode": abtest.mode,
        "alpha": abtest.alpha,
        "require_significance": abtest.require_significance,
        "arm_2_share": abtest.arm_2_share,
        "arms": arms,
        # Few clients behind much feedback is a test one party could lean on (docs/api.md,
        # "Feedback"): the summary says how many there were.
        "feedback_clients": abtest_feedback_clients(abtest=abtest),
        "comparison": comparison,
    }
    if abtest.mode == Mode.SEQUENTIAL:
        summary["sequence"] = sequence_summary(abtest)
        summary["planned_feedback"] = abtest.planned_feedback
        summary["auto_stop"] = abtest.auto_stop
    return summary


# -- the sequential test: confidence sequences, valid at every look ------------------------


def metric_of(abtest: ABTest) -> str:
    return "mae" if abtest.parent_mlalgorithm_1.task == Task.REGRESSION else "accuracy"


def arm_moments(abtest: ABTest) -> tuple[sequential.Moments, sequential.Moments]:
    """Each arm's sufficient statistics, as ``ABTestTally`` keeps them: one query of two
    rows, whatever the size of the log."""
    kept = {
        algorithm_id: sequential.Moments(count, total, total_sq)
        for algorithm_id, count, total, total_sq in ABTestTally.objects.filter(
            ab_test=abtest
        ).values_list("algorithm_id", "count", "total", "total_sq")
    }
    empty = sequential.Moments()
    return (
        kept.get(abtest.parent_mlalgorithm_1_id, empty),
        kept.get(abtest.parent_mlalgorithm_2_id, empty),
    )


def current_sequence(abtest: ABTest) -> sequential.Comparison:
    arm_1, arm_2 = arm_moments(abtest)
    return sequential.compare(
        arm_1,
        arm_2,
        metric=metric_of(abtest),
        alpha=abtest.alpha,
        planned=abtest.planned_feedback,
    )


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: an arm without enough feedback has neither bounds nor
    an estimate yet."""
    return value if math.isfinite(value) else None


def _look_record(sequence: sequential.Comparison) -> dict[str, Any]:
    return {
        "n": sequence.n,
        "estimate": _finite(sequence.estimate),
        "lower": _finite(sequence.lower),
        "upper": _finite(sequence.upper),
        "better": sequence.better,
    }


def sequence_summary(abtest: ABTest) -> dict[str, Any]:
    """The sequence at this read, JSON-ready: the difference (arm 2 - arm 1, on the test's
    metric) with its bounds, valid whenever it is read; the always-valid p-value (the
    running minimum over every look the service took); whether and when it decided."""
    sequence = current_sequence(abtest)
    first = abtest.first_exclusion
    better = first["better"] if first else sequence.better
    sign = -1.0 if metric_of(abtest) == "mae" else 1.0  # improvement: how much better arm 2 is
    estimate = _finite(sequence.estimate)
    return {
        **_look_record(sequence),
        "improvement": None if estimate is None else sign * estimate,
        "alpha": abtest.alpha,
        "planned": abtest.planned_feedback or sequential.DEFAULT_PLANNED,
        "min_count": sequential.MIN_COUNT,
        "p_value": min(abtest.min_p_value, sequence.p_value),
        "p_value_now": sequence.p_value,
        "looks": abtest.looks,
        "decided": first is not None or sequence.decided,
        "better": better,
        "first_exclusion": first,
        "width_ratio": sequence.width_ratio_at_planned,
        "arms": [
            {
                "arm": number,
                "mean": _finite(a.mean),
                "lower": _finite(a.lower),
                "upper": _finite(a.upper),
            }
            for number, a in enumerate(sequence.arms, start=1)
        ],
    }


def look(test_ids: Iterable[int]) -> None:
    """What the service does each time feedback to these tests commits (``tally.save``): a
    look. For each running sequential test, the sequence at this count; the always-valid
    p-value's running minimum kept; the first look that excludes 0 recorded; with
    ``auto_stop``, the test ended there (or, past ``planned_feedback`` undecided, ended as
    ``no_difference``). O(1) per look: two tally rows, one update."""
    tests = ABTest.objects.filter(
        pk__in=list(test_ids), state=State.RUNNING, mode=Mode.SEQUENTIAL
    ).select_related("parent_mlalgorithm_1", "parent_mlalgorithm_2")
    for abtest in tests:
        sequence = current_sequence(abtest)
        ABTest.objects.filter(pk=abtest.pk).update(
            min_p_value=Least(F("min_p_value"), sequence.p_value), looks=F("looks") + 1
        )
        if sequence.decided:  # the first look that does: recorded once, never moved
            ABTest.objects.filter(pk=abtest.pk, first_exclusion__isnull=True).update(
                first_exclusion=_look_record(sequence)
            )
        if not abtest.auto_stop:
            continue
        planned = abtest.planned_feedback or sequential.DEFAULT_PLANNED
        if sequence.decided:
            reason = "decided"
        elif sequence.n >= planned:
            reason = "planned_feedback_reached"
        else:
            continue
        with contextlib.suppress(ABTestStopped):  # another look, or a person, was first
            stop(abtest_id=abtest.pk, stopped_by=AUTO_STOP, auto_stop_reason=reason)


def _ref(algorithm: MLAlgorithm) -> dict[str, Any]:
    return {"id": algorithm.pk, "name": algorithm.name, "version": algorithm.version}


def _classification(abtest: ABTest) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    counts = abtest_arm_counts(abtest=abtest)
    arms = []
    for number, algorithm, arm in zip((1, 2), abtest.arms, counts, strict=True):
        n = arm.with_feedback
        accuracy = arm.correct / n if n else None
        arms.append(
            {
                "arm": number,
                "algorithm": _ref(algorithm),
                "requests": arm.requests,
                "with_feedback": n,
                "feedback_clients": arm.feedback_clients,
                "correct": arm.correct,
                "accuracy": accuracy,
                "metric": "accuracy",
                "value": accuracy,
                "ci_95": list(stats.wilson_interval(arm.correct, n)) if n else None,
            }
        )
    if not all(c.with_feedback for c in counts):
        return arms, None
    result = stats.compare(
        counts[0].correct,
        counts[0].with_feedback,
        counts[1].correct,
        counts[1].with_feedback,
        alpha=abtest.alpha,
    )
    return arms, _comparison(result, improvement=result.difference)


def _regression(abtest: ABTest) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    errors = abtest_arm_errors(abtest=abtest)
    samples = [stats.ErrorSample(e.with_feedback, e.total, e.squares) for e in errors]
    arms = []
    for number, algorithm, arm, sample in zip((1, 2), abtest.arms, errors, samples, strict=True):
        mae = sample.mean if sample.n else None
        arms.append(
            {
                "arm": number,
                "algorithm": _ref(algorithm),
                "requests": arm.requests,
                "with_feedback": sample.n,
                "feedback_clients": arm.feedback_clients,
                "mae": mae,
                "metric": "mae",
                "value": mae,
                "ci_95": list(stats.mean_interval(sample)) if sample.n >= 2 else None,
            }
        )
    # Welch's test needs two errors an arm; with fewer, the test waits for feedback.
    if not all(s.n >= 2 for s in samples):
        return arms, None
    result = stats.compare_errors(samples[0], samples[1], alpha=abtest.alpha)
    return arms, _comparison(result, improvement=-result.difference)


def _comparison(result: stats.Comparison, *, improvement: float) -> dict[str, Any]:
    return {
        "difference": result.difference,
        "improvement": improvement,
        "p_value": result.p_value,
        "method": result.method,
        "significant": result.significant,
    }


AUTO_STOP = "auto_stop"  # stopped_by of a test that ended itself


@transaction.atomic
def stop(
    *,
    abtest_id: int,
    stopped_by: str,
    force: bool = False,
    auto_stop_reason: str | None = None,
) -> ABTest:
    """End a running test, once: evaluate it, set the statuses it decides, save the summary.

    An arm without feedback leaves nothing to compare: ``NotEnoughData`` (409) and nothing
    changes, unless ``force``, which ends the test and restores both previous statuses.
    ``auto_stop_reason`` (``look``'s): the test ends itself, ``decided`` by its sequence or
    undecided at ``planned_feedback_reached`` (``no_difference``)."""
    # The row lock makes concurrent stops queue here; the ones after the first see it ended.
    abtest = (
        ABTest.objects.select_for_update(of=("self",))
        .select_related("parent_mlalgorithm_1", "parent_mlalgorithm_2")
        .filter(pk=abtest_id)
        .first()
    )
    if abtest is None:
        raise NotFound(f"No A/B test with id {abtest_id}.")
    if abtest.state != State.RUNNING:
        assert abtest.ended_at is not None  # a database constraint
        raise ABTestStopped(
            f"A/B test {abtest.pk} already ended ({abtest.state}) at "
            f"{abtest.ended_at.isoformat()}; a test is stopped once."
        )
    summary = evaluate(abtest)
    # A classifier's arm needs one request with feedback; a regressor's two (a spread).
    least = 2 if summary["task"] == Task.REGRESSION else 1
    starved = [a for a in summary["arms"] if a["with_feedback"] < least]
    if auto_stop_reason is not None:
        sequence = summary["sequence"]
        if auto_stop_reason == "decided" and not sequence["decided"]:
            raise ABTestStopped("The sequence has not decided.")  # defensive: look checked
        summary["stopped_itself"] = {"reason": auto_stop_reason, "at_feedback": sequence["n"]}
        force = True  # undecided at planned_feedback: ends, whatever the arms hold
    if starved and not force:
        names = " and ".join(_label(a) for a in starved)
        what = "no request" if least == 1 else "fewer than two requests"
        raise NotEnoughData(
            f"{names} {'has' if len(starved) == 1 else 'have'} {what} with feedback in this "
            "test, so there is nothing to compare. Send feedback (PUT /api/v1/mlrequests/<id>) "
            "and stop again, or pass force to end the test and restore the previous statuses.",
            details={
                "arms": [
                    {k: a[k] for k in ("arm", "requests", "with_feedback")} for a in summary["arms"]
                ]
            },
        )
    if auto_stop_reason == "planned_feedback_reached":
        outcome, production = "no_difference", None
    elif starved:
        outcome, production = "aborted", None
    else:
        outcome, production = decide(summary)
    _apply(abtest, production, stopped_by)
    abtest.state = State.ABORTED if production is None else State.STOPPED
    abtest.ended_at = timezone.now()
    abtest.stopped_by = stopped_by
    summary.update(
        outcome=outcome,
        statuses=_statuses(abtest),
        stopped_by=stopped_by,
        ended_at=abtest.ended_at.isoformat(),
    )
    abtest.summary_json = summary
    abtest.summary = summary_text(summary)
    abtest.save(update_fields=["state", "ended_at", "stopped_by", "summary", "summary_json"])
    return abtest


def decide(summary: dict[str, Any]) -> tuple[str, int | None]:
    """What stopping now would decide, by the test's mode (``evaluate``'s summary)."""
    if summary["mode"] == Mode.SEQUENTIAL:
        return _decide_sequential(summary)
    return _decide(summary)


def _decide(summary: dict[str, Any]) -> tuple[str, int | None]:
    """(outcome, the arm number going to production or None to restore both statuses):
    the better arm on the test's metric (the higher accuracy, the lower error)."""
    comparison = summary["comparison"]
    if comparison is None:  # a regressor arm with a single error: nothing to test yet
        return "aborted", None
    improvement = comparison["improvement"]
    if summary["require_significance"]:
        if comparison["significant"] and improvement > 0:
            return "arm_2_promoted", 2
        return "arm_1_kept", 1
    if improvement > 0:
        return "arm_2_promoted", 2
    if improvement < 0:
        return "arm_1_promoted", 1
    # Equal metrics decide nothing; favouring either arm would be arbitrary.
    return "tie", None


def _decide_sequential(summary: dict[str, Any]) -> tuple[str, int | None]:
    """Where the sequence excluded 0 (at this look or an earlier one: the guarantee holds
    over all of them), its better arm goes to production. Where it has not,
    ``require_significance`` decides as for a fixed test: true keeps arm 1; false promotes
    the arm that is better so far, and ``decided_by`` says the sequence had not decided."""
    sequence = summary["sequence"]
    if sequence["decided"]:
        summary["decided_by"] = "sequence"
        better = int(sequence["better"])
        return f"arm_{better}_promoted", better
    summary["decided_by"] = "undecided"
    if summary["require_significance"]:
        return "arm_1_kept", 1
    improvement = sequence["improvement"]
    if improvement is None and summary["comparison"] is not None:
        improvement = summary["comparison"]["improvement"]
    if improvement is None or improvement == 0:
        return "tie", None
    return ("arm_2_promoted", 2) if improvement > 0 else ("arm_1_promoted", 1)


def _apply(abtest: ABTest, production: int | None, by: str) -> None:
    arms = abtest.arms
    if production is None:
        for arm, previous in zip(
            arms, (abtest.previous_status_1, abtest.previous_status_2), strict=True
        ):
            _restore(arm, previous, by)
        return
    for number, arm in enumerate(arms, start=1):
        status = Status.PRODUCTION if number == production else Status.TESTING
        statuses.set_algorithm_status(algorithm=arm, status=status, created_by=by)


def _restore(algorithm: MLAlgorithm, previous: str, by: str) -> None:
    statuses.restore_status(algorithm=algorithm, previous=previous, by=by)


def _statuses(abtest: ABTest) -> dict[str, str]:
    return {str(arm.pk): _status_of(arm) for arm in abtest.arms}


def _label(arm: dict[str, Any]) -> str:
    algorithm = arm["algorithm"]
    return f"arm {arm['arm']} ({algorithm['name']} {algorithm['version']})"


def summary_text(summary: dict[str, Any]) -> str:
    """The summary in words, for the API, the admin and the report."""
    lines = []
    regression = summary.get("metric") == "mae"
    for arm in summary["arms"]:
        line = f"{_label(arm)}: {arm['requests']} requests, {arm['with_feedback']} with feedback"
        if regression and arm["mae"] is not None:
            line += f": mean absolute error {arm['mae']:.4g}"
            if arm["ci_95"]:
                low, high = arm["ci_95"]
                line += f" (95% CI {low:.4g} to {high:.4g})"
        elif not regression and arm["accuracy"] is not None:
            low, high = arm["ci_95"]
            line += (
                f", {arm['correct']} correct: accuracy {arm['accuracy']:.1%} "
                f"(95% CI {low:.1%} to {high:.1%})"
            )
        lines.append(line + ".")
    if "feedback_clients" in summary:  # summaries saved before it was counted lack it
        clients = summary["feedback_clients"]
        lines.append(f"The feedback came from {clients} distinct client{'s' * (clients != 1)}.")
    comparison, alpha = summary["comparison"], summary["alpha"]
    if comparison is not None:
        verdict = "significant" if comparison["significant"] else "not significant"
        method = comparison["method"].replace("_", " ")
        difference = (
            f"Difference in mean absolute error (arm 2 - arm 1): {comparison['difference']:+.4g}"
            if regression
            else f"Difference (arm 2 - arm 1): {comparison['difference'] * 100:+.1f} points"
        )
        lines.append(
            f"{difference}; {method}, two-sided p = {comparison['p_value']:.3g}: {verdict} at "
            f"alpha {alpha:g}."
        )
    if "sequence" in summary:
        lines.append(sequence_text(summary["sequence"], regression=regression))
    if summary.get("decided_by") == "undecided" and summary.get("outcome", "").endswith(
        "_promoted"
    ):
        lines.append(
            "The sequence had not decided: this arm is promoted because it is better so far "
            "and require_significance is off, not because the difference is established."
        )
    stopped_itself = summary.get("stopped_itself")
    if stopped_itself:
        why = (
            "its sequence decided"
            if stopped_itself["reason"] == "decided"
            else "planned_feedback was reached without a decision"
        )
        lines.append(
            f"The test stopped itself at {stopped_itself['at_feedback']} feedbacks: {why}."
        )
    better = "had the lower error" if regression else "was more accurate"
    lines.append(
        _OUTCOMES[summary.get("outcome", "running")].format(
            better=better,
            statuses=", ".join(
                f"algorithm {pk} -> {s or 'no status'}"
                for pk, s in summary.get("statuses", {}).items()
            ),
        )
    )
    return "\n".join(lines)


def sequence_text(sequence: dict[str, Any], *, regression: bool) -> str:
    """The confidence sequence in words: what the numbers allow, and no more."""
    n, alpha, p = sequence["n"], sequence["alpha"], sequence["p_value"]
    low, high = sequence["lower"], sequence["upper"]
    if low is None or high is None:
        return (
            f"Confidence sequence: not yet ({n} requests with feedback; each arm needs "
            f"{sequence['min_count']} before the sequence can decide)."
        )

    def amount(a: float, b: float) -> str:
        return f"{a:.4g} to {b:.4g}" if regression else f"{a * 100:.1f} to {b * 100:.1f} points"

    holds = f"this holds at every look (always-valid p = {p:.3g}, alpha {alpha:g})"
    if sequence["decided"]:
        first = sequence["first_exclusion"] or {"n": n, "lower": low, "upper": high}
        # The bounds of this look where they still exclude 0, else those of the look that
        # decided: either is valid, the guarantee being over every look.
        at, (low, high) = (
            (n, (low, high))
            if low > 0 or high < 0
            else (
                first["n"],
                (first["lower"], first["upper"]),
            )
        )
        better = int(sequence["better"])
        # The difference is arm 2 - arm 1; as an amount in arm ``better``'s favour it is
        # negated where that arm is arm 1 on accuracy or arm 2 on error (lower is better).
        gap = (-high, -low) if (better == 2) == regression else (low, high)
        what = "lower mean absolute error" if regression else "more accurate"
        return (
            f"Confidence sequence: arm {better} is {what} by {amount(*gap)} (at {at} requests "
            f"with feedback; decided at {first['n']}); {holds}."
        )
    diff = "mean absolute error" if regression else "accuracy"
    return (
        f"Confidence sequence: not decided; arm 2 - arm 1 in {diff} is between "
        f"{amount(low, high)} at {n} requests with feedback (planned {sequence['planned']}); "
        f"{holds}."
    )


_OUTCOMES = {
    "running": "The test is running; these numbers are provisional.",
    "arm_1_promoted": "Arm 1 {better} and goes to production, arm 2 to testing ({statuses}).",
    "arm_2_promoted": "Arm 2 {better} and goes to production, arm 1 to testing ({statuses}).",
    "arm_1_kept": "require_significance is set and arm 2 was not significantly better: arm 1 "
    "stays in production, arm 2 goes to testing ({statuses}).",
    "tie": "Both arms scored the same: nothing is promoted and both previous statuses are "
    "restored ({statuses}).",
    "aborted": "Ended with force without enough feedback: nothing is promoted and both "
    "previous statuses are restored ({statuses}).",
    "no_difference": "No difference was established by planned_feedback: nothing is promoted "
    "and both previous statuses are restored ({statuses}).",
}
