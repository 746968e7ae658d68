"""Reads of drift: a version's window against its reference, feature by feature."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import F

from apps.endpoints.models import DriftReference, MLAlgorithm
from apps.endpoints.monitoring import window
from apps.ml import drift


def thresholds() -> drift.Thresholds:
    """The floors from the settings; each reference may raise them (``drift.assess``)."""
    return drift.Thresholds(
        psi=settings.DRIFT_PSI,
        wasserstein=settings.DRIFT_WASSERSTEIN,
        js=settings.DRIFT_JS,
        unseen=settings.DRIFT_UNSEEN_SHARE,
        invalid=settings.DRIFT_INVALID_SHARE,
        out_of_range=settings.DRIFT_OUT_OF_RANGE_SHARE,
        missing_points=settings.DRIFT_MISSING_POINTS,
        min_rows=settings.DRIFT_MIN_RECORDS,
    )


@dataclass
class VersionDrift:
    """One version's drift: its reference, its window, and every feature's numbers, the
    most drifted first (flagged ones, then by how close their measures come to their
    thresholds). Without a reference, ``note`` says why nothing is computed."""

    algorithm: MLAlgorithm
    reference: DriftReference | None
    records: int = 0
    features: list[drift.FeatureDrift] = field(default_factory=list)
    note: str = ""

    @property
    def drifting(self) -> list[drift.FeatureDrift]:
        return [f for f in self.features if f.drifting]

    def to_dict(self) -> dict[str, Any]:
        algorithm, reference = self.algorithm, self.reference
        return {
            "algorithm": algorithm.pk,
            "name": algorithm.name,
            "version": algorithm.version,
            "monitoring": settings.DRIFT_MONITORING,
            "reference": None
            if reference is None
            else {
                "id": reference.pk,
                "rows": reference.rows,
                "source": reference.source,
                "file_name": reference.file_name,
                "created_at": reference.created_at.isoformat(),
            },
            "window": {
                "records": self.records,
                "size": settings.DRIFT_WINDOW,
                "min_records": settings.DRIFT_MIN_RECORDS,
            },
            "drifting": len(self.drifting),
            "drifting_features": [f.name for f in self.drifting],
            "features": [f.to_dict() for f in self.features],
            "note": self.note,
        }


def current_reference(algorithm: MLAlgorithm) -> DriftReference | None:
    return DriftReference.objects.filter(algorithm=algorithm, replaced_at__isnull=True).first()


def version_drift(algorithm: MLAlgorithm) -> VersionDrift:
    reference = current_reference(algorithm)
    if reference is None:
        return VersionDrift(
            algorithm,
            None,
            note="This version has no reference profile, so drift is not computed: add "
            "one (POST /api/v1/mlalgorithms/<id>/reference, or manage.py set_reference).",
        )
    profile = drift.Profile.from_dict(reference.profile)
    codes = window.codes(reference.pk, settings.DRIFT_WINDOW, len(profile.features))
    features = drift.assess(profile, codes, thresholds())
    features.sort(key=_urgency, reverse=True)
    note = ""
    if len(codes) < settings.DRIFT_MIN_RECORDS:
        note = (
            f"The window holds {len(codes)} records; features are flagged from "
            f"{settings.DRIFT_MIN_RECORDS} on (DRIFT_MIN_RECORDS)."
        )
    return VersionDrift(algorithm, reference, len(codes), features, note)


def _urgency(feature: drift.FeatureDrift) -> tuple[bool, float]:
    ratios = [
        value / feature.thresholds[name]
        for name, value in feature.measures.items()
        if value is not None and feature.thresholds.get(name)
    ]
    return feature.drifting, max(ratios, default=0.0)


def history(algorithm: MLAlgorithm) -> list[DriftReference]:
    """Every reference the version has had, the current one first."""
    return list(
        DriftReference.objects.filter(algorithm=algorithm)
        .defer("profile")
        .order_by(F("replaced_at").desc(nulls_first=True), "-id")
    )
