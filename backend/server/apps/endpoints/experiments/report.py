"""The report page of an A/B test: server-rendered HTML with an inline SVG, no JavaScript.

A dot-and-whisker chart (accuracy and 95 % Wilson interval per arm) rather than bars: the
axis is zoomed to the intervals, and bars on a zoomed axis would exaggerate the gap.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from apps.endpoints.experiments import ab_testing, evaluation, sequential
from apps.endpoints.models import ABTest, MLRequest

WIDTH, LEFT, RIGHT, ROW, TOP = 720, 220, 40, 56, 28


def context(abtest: ABTest) -> dict[str, Any]:
    """What the report page shows: an ended test the numbers it was decided on, a running
    one the numbers so far; a sequential test also its sequence over time."""
    summary = abtest.summary_json or ab_testing.evaluate(abtest)
    running = abtest.state == ABTest.State.RUNNING
    sequential_test = abtest.mode == ABTest.Mode.SEQUENTIAL and "sequence" in summary
    return {
        "abtest": abtest,
        "summary": summary,
        "running": running,
        "sequential": sequential_test,
        "text": abtest.summary if not running else ab_testing.summary_text(summary),
        "chart": chart(summary["arms"], summary.get("metric", "accuracy")),
        "over_time": over_time(abtest, summary) if sequential_test else None,
    }


# -- the sequence over time ----------------------------------------------------------------

PLOT_TOP, PLOT_HEIGHT, MOST_POINTS = 20, 260, 400


def over_time(abtest: ABTest, summary: dict[str, Any]) -> dict[str, Any] | None:
    """The difference (arm 2 - arm 1) and its confidence sequence against the count of
    requests with feedback, replayed from the log in the order the feedback arrived (up to
    the stop, for an ended test): an SVG's coordinates. The replay reads each request's
    current feedback: one revised later counts with its new value from its first
    arrival. None until both arms have feedback."""
    regression = summary.get("metric") == "mae"
    arms, observations = feedback_in_order(abtest, regression=regression)
    if not (arms == 1).any() or not (arms == 2).any():
        return None
    first, second = arms == 1, arms == 2
    n1, n2 = np.cumsum(first), np.cumsum(second)
    sum1, sum2 = (
        np.cumsum(np.where(first, observations, 0.0)),
        np.cumsum(np.where(second, observations, 0.0)),
    )
    sq1 = np.cumsum(np.where(first, observations**2, 0.0))
    sq2 = np.cumsum(np.where(second, observations**2, 0.0))
    planned = abtest.planned_feedback or sequential.DEFAULT_PLANNED
    bounds = sequential.sequence_bounds(
        sum1,
        sq1,
        n1,
        sum2,
        sq2,
        n2,
        bernoulli=not regression,
        alpha=abtest.alpha,
        rho2=sequential.rho_squared(abtest.alpha, planned),
    )
    # From the first look where both arms have MIN_COUNT: before it nothing can decide and
    # the plug-in variance is noise.
    ready = np.flatnonzero((n1 >= sequential.MIN_COUNT) & (n2 >= sequential.MIN_COUNT))
    if not ready.size:
        return None
    keep = np.unique(np.linspace(ready[0], len(arms) - 1, MOST_POINTS).round().astype(int))
    counts = keep + 1
    estimate, lower, upper = bounds.estimate[keep], bounds.lower[keep], bounds.upper[keep]
    scale = 1.0 if regression else 100.0  # points for accuracy
    low = float(min(lower.min(), 0.0)) * scale
    high = float(max(upper.max(), 0.0)) * scale
    span = (high - low) or 1.0
    x_end = max(float(counts[-1]), float(planned))
    plot = WIDTH - LEFT - RIGHT

    def x(count: float) -> float:
        return round(LEFT + count / x_end * plot, 1)

    def y(value: float) -> float:
        return round(PLOT_TOP + (high - value * scale) / span * PLOT_HEIGHT, 1)

    band = [f"{x(c)},{y(v)}" for c, v in zip(counts, upper, strict=True)]
    band += [f"{x(c)},{y(v)}" for c, v in zip(counts[::-1], lower[::-1], strict=True)]
    stopped = summary.get("stopped_itself") or {}
    stop_at = stopped.get("at_feedback") or (
        summary["sequence"]["n"] if not _running(abtest) else None
    )
    first_exclusion = summary["sequence"].get("first_exclusion")
    step = nice_step(span)
    ticks = [t for t in np.arange(math.ceil(low / step) * step, high + step / 2, step)]
    return {
        "width": WIDTH,
        "height": PLOT_TOP + PLOT_HEIGHT + 44,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "bottom": PLOT_TOP + PLOT_HEIGHT,
        "band": " ".join(band),
        "estimate": " ".join(f"{x(c)},{y(v)}" for c, v in zip(counts, estimate, strict=True)),
        "zero_y": y(0.0),
        "stop_x": x(stop_at) if stop_at else None,
        "decided_x": x(first_exclusion["n"]) if first_exclusion else None,
        "planned_x": x(planned),
        "planned": planned,
        "ticks": [{"y": y(t / scale), "label": f"{t:+.4g}"} for t in ticks],
        "unit": "mean absolute error" if regression else "accuracy, points",
        "count": int(counts[-1]),
    }


def _running(abtest: ABTest) -> bool:
    return abtest.state == ABTest.State.RUNNING


def feedback_in_order(abtest: ABTest, *, regression: bool) -> tuple[np.ndarray, np.ndarray]:
    """The test's requests with feedback, in the order it arrived (up to the stop): each
    one's arm (1 or 2) and observation (1.0 correct, 0.0 wrong, or the absolute error)."""
    rows = MLRequest.objects.filter(ab_test=abtest, feedback__isnull=False)
    if abtest.ended_at is not None:
        rows = rows.filter(feedback_at__lte=abtest.ended_at)
    arm_of = {abtest.parent_mlalgorithm_1_id: 1, abtest.parent_mlalgorithm_2_id: 2}
    arms, observations = [], []
    for algorithm_id, response, value in rows.order_by("feedback_at", "id").values_list(
        "parent_mlalgorithm_id", "response", "feedback"
    ):
        if value is None:  # not there: the filter above; for the type checker
            continue
        arms.append(arm_of.get(algorithm_id, 0))
        observations.append(evaluation.observation(response, value, regression=regression))
    return np.asarray(arms, dtype=int), np.asarray(observations, dtype=float)


def chart(arms: list[dict[str, Any]], metric: str = "accuracy") -> dict[str, Any]:
    """Coordinates of the SVG: one row per arm, an x axis in the test's metric: accuracy
    (percentage points) for classifiers, mean absolute error for regressors."""
    intervals = [a["ci_95"] for a in arms if a["ci_95"]]
    errors = metric == "mae"
    if errors:
        low, high = error_axis_range(intervals)
        step = nice_step(high - low)
    else:
        low, high = axis_range(intervals)
        step = 0.05 if high - low <= 0.5 else 0.1
    plot = WIDTH - LEFT - RIGHT

    def x(value: float) -> float:
        return round(LEFT + (value - low) / (high - low) * plot, 1)

    ticks = [low + i * step for i in range(round((high - low) / step) + 1)]
    rows = []
    for i, arm in enumerate(arms):
        y = TOP + ROW // 2 + i * ROW
        if not errors:
            value_label = f"{arm['correct']}/{arm['with_feedback']}"
        elif arm.get("mae") is not None:
            value_label = f"{arm['mae']:.3g} (n={arm['with_feedback']})"
        else:
            value_label = ""
        row: dict[str, Any] = {
            "y": y,
            "arm": arm,
            "label": f"Arm {arm['arm']}: {arm['algorithm']['name']} {arm['algorithm']['version']}",
            "value_label": value_label,
        }
        if arm["ci_95"]:
            value = arm["mae"] if errors else arm["accuracy"]
            row.update(x_low=x(arm["ci_95"][0]), x_high=x(arm["ci_95"][1]), x_acc=x(value))
        rows.append(row)
    axis_y = TOP + ROW * len(arms)
    return {
        "width": WIDTH,
        "height": axis_y + 40,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "axis_y": axis_y,
        "rows": rows,
        "axis_title": (
            "mean absolute error on requests with feedback (lower is better)"
            if errors
            else "accuracy on requests with feedback"
        ),
        "ticks": [
            {
                "x": x(t),
                "label": f"{round(t, 10):g}" if errors else f"{t * 100:.0f}%",
            }
            for t in ticks
        ],
    }


def axis_range(intervals: list[list[float]]) -> tuple[float, float]:
    """The intervals' span widened to whole 5-point steps (at least 10 points), in [0, 1]."""
    if not intervals:
        return 0.0, 1.0
    low = math.floor(min(i[0] for i in intervals) * 20) / 20
    high = math.ceil(max(i[1] for i in intervals) * 20) / 20
    if high - low < 0.1:
        low, high = max(0.0, high - 0.1), max(high, 0.1)
    return max(0.0, low), min(1.0, high)


def nice_step(span: float) -> float:
    """A tick step of 1, 2 or 5 times a power of ten giving about five ticks over ``span``."""
    raw = span / 5 if span > 0 else 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def error_axis_range(intervals: list[list[float]]) -> tuple[float, float]:
    """From 0 (or below the lowest interval) to past the highest, on whole ticks."""
    if not intervals:
        return 0.0, 1.0
    top = max(i[1] for i in intervals)
    bottom = min(i[0] for i in intervals)
    step = nice_step(max(top - bottom, top * 0.1, 1e-9))
    low = math.floor(bottom / step) * step
    high = math.ceil(top / step) * step
    if high <= low:
        high = low + step
    return max(0.0, low), high
