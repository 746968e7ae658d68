"""The report page of a shadow: server-rendered HTML with inline SVGs, no JavaScript.

Two charts against the count of requests: the agreement of the shadow with production
over the copies it scored, and the paired confidence sequence over the pairs with feedback,
replayed from the log in the order the feedback arrived (as an A/B test's report replays
its sequence); then the discordant pairs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from apps.endpoints.experiments import evaluation, paired
from apps.endpoints.experiments.report import nice_step
from apps.endpoints.experiments.sequential import DEFAULT_PLANNED, MIN_COUNT, rho_squared
from apps.endpoints.models import Shadow, ShadowAnswer, Task
from apps.endpoints.shadows import comparison, selectors

WIDTH, LEFT, RIGHT, PLOT_TOP, PLOT_HEIGHT, MOST_POINTS = 720, 90, 40, 20, 220, 400
AGREEMENT_WINDOW = 100_000


def context(shadow: Shadow) -> dict[str, Any]:
    regression = shadow.candidate.task == Task.REGRESSION
    answers = ShadowAnswer.objects.filter(shadow=shadow).values_list(
        "response", "request__response", "request__feedback", "request__feedback_at"
    )
    # The agreement over the latest copies (a long shadow's millions would not help a
    # chart); the sequence over every pair with feedback, as an A/B test's report.
    latest = list(answers.order_by("-request_id")[:AGREEMENT_WINDOW])[::-1]
    labelled = list(answers.filter(request__feedback__isnull=False).order_by("request_id"))
    return {
        "shadow": shadow,
        "running": shadow.state == Shadow.State.RUNNING,
        "regression": regression,
        "summary": comparison.summary(shadow),
        "agreement": agreement_over_time(latest, regression=regression),
        "agreement_window": AGREEMENT_WINDOW,
        "over_time": sequence_over_time(shadow, labelled, regression=regression),
        "discordant": selectors.discordant_pairs(shadow),
    }


def _plot(
    counts: np.ndarray,
    lines: dict[str, np.ndarray],
    *,
    band: tuple[np.ndarray, np.ndarray] | None,
    x_end: float,
    scale: float,
) -> dict[str, Any]:
    """SVG coordinates for ``lines`` (and a shaded ``band``) against ``counts``."""
    values = [v for v in lines.values()] + ([*band] if band else [])
    low = float(min(min(v.min() for v in values), 0.0)) * scale
    high = float(max(max(v.max() for v in values), 0.0)) * scale
    span = (high - low) or 1.0
    plot = WIDTH - LEFT - RIGHT

    def x(count: float) -> float:
        return round(LEFT + count / x_end * plot, 1)

    def y(value: float) -> float:
        return round(PLOT_TOP + (high - value * scale) / span * PLOT_HEIGHT, 1)

    step = nice_step(span)
    ticks = np.arange(math.ceil(low / step) * step, high + step / 2, step)
    shape: dict[str, Any] = {
        "width": WIDTH,
        "height": PLOT_TOP + PLOT_HEIGHT + 44,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "bottom": PLOT_TOP + PLOT_HEIGHT,
        "zero_y": y(0.0),
        "ticks": [{"y": y(t / scale), "label": f"{t:+.4g}"} for t in ticks],
        "count": int(counts[-1]),
    }
    for name, line in lines.items():
        shape[name] = " ".join(f"{x(c)},{y(v)}" for c, v in zip(counts, line, strict=True))
    if band is not None:
        lower, upper = band
        points = [f"{x(c)},{y(v)}" for c, v in zip(counts, upper, strict=True)]
        points += [f"{x(c)},{y(v)}" for c, v in zip(counts[::-1], lower[::-1], strict=True)]
        shape["band"] = " ".join(points)
    return shape


def agreement_over_time(
    answers: list[tuple[str, str, str | None, Any]], *, regression: bool
) -> dict[str, Any] | None:
    """Classifiers: the share of copies so far on which the shadow gave production's label;
    regressors: the mean of shadow - production so far. Over the copies in request order."""
    if not answers:
        return None
    if regression:
        gaps = np.array([float(s) - float(p) for s, p, _, _ in answers])
    else:
        gaps = np.array([float(s == p) for s, p, _, _ in answers])
    running = np.cumsum(gaps) / np.arange(1, len(gaps) + 1)
    keep = np.unique(np.linspace(0, len(gaps) - 1, MOST_POINTS).round().astype(int))
    shape = _plot(
        keep + 1,
        {"line": running[keep]},
        band=None,
        x_end=float(len(gaps)),
        scale=1.0 if regression else 100.0,
    )
    shape["unit"] = "mean of shadow - production" if regression else "agreement, %"
    return shape


def sequence_over_time(
    shadow: Shadow, answers: list[tuple[str, str, str | None, Any]], *, regression: bool
) -> dict[str, Any] | None:
    """The paired difference (positive: the shadow did better) and its confidence
    sequence against the pairs with feedback, in the order the feedback arrived. Each
    request's current feedback: one revised later counts with its new value throughout."""
    labelled = sorted(
        ((at, s, p, truth) for s, p, truth, at in answers if truth is not None),
        key=lambda row: (row[0] is None, row[0]),
    )
    if len(labelled) < MIN_COUNT:
        return None
    x_p = np.array([evaluation.observation(p, t, regression=regression) for _, _, p, t in labelled])
    x_s = np.array([evaluation.observation(s, t, regression=regression) for _, s, _, t in labelled])
    d = x_p - x_s if regression else x_s - x_p
    planned = shadow.planned_feedback or DEFAULT_PLANNED
    n = np.arange(1, len(d) + 1)
    bounds = paired.paired_bounds(
        n,
        np.cumsum(d),
        np.cumsum(d * d),
        np.cumsum(x_p),
        np.cumsum(x_s),
        metric="mae" if regression else "accuracy",
        alpha=shadow.alpha,
        rho2=rho_squared(shadow.alpha, planned),
    )
    keep = np.unique(np.linspace(MIN_COUNT - 1, len(d) - 1, MOST_POINTS).round().astype(int))
    x_end = float(max(len(d), planned))
    shape = _plot(
        keep + 1,
        {"estimate": bounds.estimate[keep]},
        band=(bounds.lower[keep], bounds.upper[keep]),
        x_end=x_end,
        scale=1.0 if regression else 100.0,
    )
    plot = WIDTH - LEFT - RIGHT
    shape["planned"] = planned
    shape["planned_x"] = round(LEFT + planned / x_end * plot, 1)
    decided = shadow.first_exclusion
    shape["decided_x"] = round(LEFT + decided["n"] / x_end * plot, 1) if decided else None
    shape["unit"] = (
        "|e| production - |e| shadow" if regression else "accuracy, shadow - production, points"
    )
    return shape
