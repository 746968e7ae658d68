"""A shadow against production, from the shadow's counters: agreement, latency, and the
paired comparison on the requests with feedback (``experiments/paired.py``).

``summary`` is what the API, the report and /metrics show; ``sequence`` what a look reads.
Both read the row only, except the Wilcoxon test of a regressor's shadow, which ranks the
pairs' differences and so reads them from the log (``selectors.paired_errors``)."""

from __future__ import annotations

import math
from typing import Any

from apps.endpoints.experiments import paired
from apps.endpoints.experiments.sequential import DEFAULT_PLANNED
from apps.endpoints.models import Shadow, Task
from apps.endpoints.shadows import selectors


def metric(shadow: Shadow) -> str:
    return "mae" if shadow.candidate.task == Task.REGRESSION else "accuracy"


def moments(shadow: Shadow) -> paired.PairedMoments:
    return paired.PairedMoments(
        n=shadow.pairs,
        sum_d=shadow.sum_d,
        sum_d2=shadow.sum_d2,
        sum_p=shadow.sum_p,
        sum_p2=shadow.sum_p2,
        sum_s=shadow.sum_s,
        sum_s2=shadow.sum_s2,
        b=shadow.only_production_right,
        c=shadow.only_shadow_right,
    )


def sequence(shadow: Shadow) -> dict[str, Any]:
    """The paired confidence sequence at the pairs so far, JSON-ready (NaN as None)."""
    planned = shadow.planned_feedback or DEFAULT_PLANNED
    look = paired.paired_sequence(
        moments(shadow), metric=metric(shadow), alpha=shadow.alpha, planned=planned
    )
    return {k: _number(v) for k, v in look._asdict().items()} | {"planned": planned}


def summary(shadow: Shadow, *, tests: bool = True) -> dict[str, Any]:
    """Everything known about the comparison. ``tests``: with the fixed-horizon test of
    the end (McNemar, or Wilcoxon, which reads the log)."""
    regression = shadow.candidate.task == Task.REGRESSION
    copies = shadow.copies
    agreement: dict[str, Any]
    if regression:
        mean = shadow.difference / copies if copies else None
        spread = (
            math.sqrt(max(shadow.difference_sq / copies - mean * mean, 0.0))
            if copies and mean is not None
            else None
        )
        agreement = {"mean_difference": mean, "sd_difference": spread}
    else:
        agreement = {"agreed": shadow.agreed, "rate": shadow.agreed / copies if copies else None}
    n = shadow.pairs
    m = moments(shadow)
    what = "mean_absolute_error" if regression else "accuracy"
    result: dict[str, Any] = {
        "metric": what,
        "copies": copies,
        "dropped": shadow.dropped,
        "failed": shadow.failed,
        "agreement": agreement,
        "latency_ms": {
            "production": shadow.production_ms / copies if copies else None,
            "shadow": shadow.shadow_ms / copies if copies else None,
        },
        "pairs": n,
        "production": {what: shadow.sum_p / n if n else None},
        "shadow": {what: shadow.sum_s / n if n else None},
        "sequence": sequence(shadow),
        "min_p_value": shadow.min_p_value,
        "looks": shadow.looks,
        "first_exclusion": shadow.first_exclusion,
        "decided": shadow.first_exclusion is not None,
        "better": (shadow.first_exclusion or {}).get("better"),
        "pairing_gain": paired.pairing_gain(m),
    }
    if not tests:
        return result
    if regression:
        differences = selectors.paired_differences(shadow)
        test = paired.wilcoxon(differences)
        result["wilcoxon"] = {
            "statistic": test.statistic,
            "p_value": test.p_value,
            "zero_method": "wilcox",
            "note": "Tests a shift of the pseudo-median of |e_production| - |e_shadow|, "
            "not of its mean; valid at one look decided in advance.",
        }
    else:
        result["mcnemar"] = {
            "only_production_right": m.b,
            "only_shadow_right": m.c,
            "p_value": paired.mcnemar(m.b, m.c),
            "note": "McNemar's exact test of the discordant pairs; valid at one look "
            "decided in advance.",
        }
    return result


def _number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
