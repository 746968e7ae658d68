"""The drift report page of a version: per feature, the reference's and the window's
histograms side by side (inline SVG), the measures against their thresholds, and the
data-quality shares; the most drifted first. Server-rendered, no JavaScript."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from apps.endpoints.models import MLAlgorithm
from apps.endpoints.monitoring import selectors
from apps.ml import drift

WIDTH = 560  # of a histogram, in px
BAR_HEIGHT = 14
LABEL_WIDTH = 170


def context(algorithm: MLAlgorithm) -> dict[str, Any]:
    found = selectors.version_drift(algorithm)
    body = found.to_dict()
    profile = (
        drift.Profile.from_dict(found.reference.profile) if found.reference is not None else None
    )
    features = []
    for feature in found.features:
        labels = _labels(profile, feature)
        features.append(
            {
                **feature.to_dict(),
                "drifting": feature.drifting,
                "histogram": histogram(labels, feature.reference, feature.current),
            }
        )
    return {
        "algorithm": algorithm,
        "drift": body,
        "features": features,
        "history": selectors.history(algorithm),
        "api_url": reverse("endpoint-drift", args=[algorithm.parent_endpoint.name])
        + f"?version={algorithm.version}",
    }


def _labels(profile: drift.Profile | None, feature: drift.FeatureDrift) -> list[str]:
    if profile is None:
        return []
    for candidate in profile.features:
        if candidate.name == feature.name and candidate.role == feature.role:
            return candidate.labels()
    return []


def histogram(
    labels: list[str], reference: tuple[float, ...], current: tuple[float, ...]
) -> dict[str, Any]:
    """Two bars per bin, the reference's (grey) above the window's (blue), as shares on a
    common scale."""
    top = max([*reference, *current, 1e-9])
    scale = (WIDTH - LABEL_WIDTH - 60) / top
    rows = []
    for index, label in enumerate(labels):
        ref = reference[index] if index < len(reference) else 0.0
        cur = current[index] if index < len(current) else 0.0
        y = index * (2 * BAR_HEIGHT + 6)
        rows.append(
            {
                "label": label if len(label) <= 28 else label[:27] + "…",
                "y": y,
                "text_y": y + BAR_HEIGHT + 3,
                "current_y": y + BAR_HEIGHT,
                "reference_width": round(ref * scale, 1),
                "current_width": round(cur * scale, 1),
                "reference_share": f"{ref:.1%}",
                "current_share": f"{cur:.1%}",
                "reference_x": LABEL_WIDTH + round(ref * scale, 1) + 4,
                "current_x": LABEL_WIDTH + round(cur * scale, 1) + 4,
            }
        )
    return {
        "width": WIDTH,
        "height": max(1, len(rows)) * (2 * BAR_HEIGHT + 6),
        "left": LABEL_WIDTH,
        "bar": BAR_HEIGHT - 2,
        "rows": rows,
    }
