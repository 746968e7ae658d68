"""The report page of an A/B test: server-rendered HTML with an inline SVG, no JavaScript.

A dot-and-whisker chart (accuracy and 95 % Wilson interval per arm) rather than bars: the
axis is zoomed to the intervals, and bars on a zoomed axis would exaggerate the gap.
"""

from __future__ import annotations

import math
from typing import Any

from apps.endpoints.experiments import ab_testing
from apps.endpoints.models import ABTest

WIDTH, LEFT, RIGHT, ROW, TOP = 720, 220, 40, 56, 28


def context(abtest: ABTest) -> dict[str, Any]:
    """What the report page shows: an ended test the numbers it was decided on, a running
    one the numbers so far."""
    summary = abtest.summary_json or ab_testing.evaluate(abtest)
    running = abtest.state == ABTest.State.RUNNING
    return {
        "abtest": abtest,
        "summary": summary,
        "running": running,
        "text": abtest.summary if not running else ab_testing.summary_text(summary),
        "chart": chart(summary["arms"], summary.get("metric", "accuracy")),
    }


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
