"""Reference profiles: what each version's inputs and outputs looked like when it was made.

A profile is built from a reference sample (a CSV file of the model's features, the target
column allowed) the way a request is read: every cell checked and converted by the model's
signature (``codecs.frame_from_text``), then the model answers every row, so its outputs
have a profile too. What is kept is ``apps.ml.drift.Profile``: bins and counts, kilobytes,
not the sample.

Where a version's reference comes from: a reference file at registration (``--reference``,
the upload's ``reference`` field), else the input example when it has at least
``DRIFT_MIN_EXAMPLE_ROWS`` rows, else none (drift is not computed, and the card says so);
the demo models get their training data. ``renew`` adds or replaces one later; the
replaced profile stays in the version's history, and the window starts again (its records
are codes of the old profile's bins).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.core.errors import InvalidInput, PayloadTooLarge
from apps.core.per_process import Remembered
from apps.endpoints.models import DriftReference, DriftSegment, MLAlgorithm
from apps.ml import codecs, drift
from apps.ml import registry as ml_registry
from apps.ml.answer import ModelOutput
from apps.ml.signature import REGRESSION, Signature

if TYPE_CHECKING:
    from apps.ml.runtime import Runtime


@dataclass(frozen=True)
class Built:
    """A profile ready to store, or why there is none (``note``)."""

    profile: drift.Profile | None
    rows: int
    source: str
    file_name: str = ""
    note: str = ""


def kind_of(feature_type: str) -> str:
    """Numbers are binned by quantiles; categories, strings and booleans by value."""
    return drift.NUMERIC if feature_type == "number" else drift.CATEGORICAL


def output_columns(signature: Signature, output: ModelOutput) -> dict[str, np.ndarray]:
    """The outputs a profile describes: a classifier's label, a regressor's prediction."""
    if signature.task == REGRESSION:
        return {} if output.values is None else {"prediction": output.values}
    return {} if output.labels is None else {"label": output.labels}


def output_kinds(signature: Signature) -> list[tuple[str, str]]:
    if signature.task == REGRESSION:
        return [("prediction", drift.NUMERIC)]
    return [("label", drift.CATEGORICAL)]


def build(
    data: bytes,
    runtime: Runtime,
    *,
    source: str,
    file_name: str = "",
    target_column: str = "",
    minimum: int | None = None,
) -> Built:
    """The profile of a reference file for ``runtime``'s model. Raises ``InvalidInput``
    (400) for a file that is not a CSV of the model's features, or whose cells the model
    would refuse; a file with too few rows gives no profile and a note."""
    signature = runtime.signature
    limit = settings.DRIFT_REFERENCE_MAX_BYTES
    if len(data) > limit:
        raise PayloadTooLarge(
            f"The reference file is larger than {limit} bytes (DRIFT_REFERENCE_MAX_BYTES)."
        )
    columns = _read_columns(data, signature, target_column)
    rows = len(next(iter(columns.values()))) if columns else 0
    minimum = settings.DRIFT_MIN_REFERENCE_ROWS if minimum is None else minimum
    if rows < minimum:
        return Built(
            None,
            rows,
            source,
            file_name,
            note=f"The {_what(source)} has {rows} rows; a reference profile needs at least "
            f"{minimum}, so drift is not computed for this version.",
        )
    try:
        frame = codecs.frame_from_text(columns, signature)
    except InvalidInput as exc:
        raise InvalidInput(f"The {_what(source)}: {exc.message}", details=exc.details) from exc
    output = runtime.predict(frame)
    inputs = [(f.name, kind_of(f.type), frame.columns[f.name]) for f in signature.features]
    produced = output_columns(signature, output)
    outputs = [(name, kind, produced[name]) for name, kind in output_kinds(signature)]
    return Built(drift.build_profile(inputs, outputs), rows, source, file_name)


def _what(source: str) -> str:
    return "input example" if source == DriftReference.Source.EXAMPLE else "reference file"


def _read_columns(data: bytes, signature: Signature, target_column: str) -> dict[str, list[str]]:
    """The file's cells as text, by the model's features: its other columns named in a 400."""
    import pandas as pd

    try:
        table = pd.read_csv(
            io.BytesIO(data),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8-sig",
        )
    except Exception as exc:  # pandas' parser errors, bad bytes, an empty file
        raise InvalidInput(f"The reference file is not a CSV file: {str(exc)[:200]}") from exc
    header = [str(c).strip() for c in table.columns]
    table.columns = header
    wanted = set(signature.names)
    other = [c for c in header if c not in wanted and c != target_column]
    missing = [name for name in signature.names if name not in header]
    if other or missing:
        parts = []
        if other:
            parts.append(f"columns the model does not take: {', '.join(other)}")
        if missing:
            parts.append(f"no column for the feature(s): {', '.join(missing)}")
        raise InvalidInput(
            "The reference file must have the model's feature columns (and may have its "
            f"target column): {'; '.join(parts)}.",
            details={"columns": other, "missing": missing},
        )
    return {name: table[name].tolist() for name in signature.names}


def store(algorithm: MLAlgorithm, built: Built, *, created_by: str) -> DriftReference | None:
    """Record ``built`` as the version's current reference (the caller's transaction); the
    one it replaces stays as history. None when there is no profile to store."""
    if built.profile is None:
        return None
    DriftReference.objects.filter(algorithm=algorithm, replaced_at__isnull=True).update(
        replaced_at=timezone.now()
    )
    # The window's records are codes of the replaced profile's bins: they go with it.
    DriftSegment.objects.filter(reference__algorithm=algorithm).delete()
    reference = DriftReference.objects.create(
        algorithm=algorithm,
        source=built.source,
        file_name=built.file_name[:255],
        rows=built.rows,
        profile=built.profile.to_dict(),
        created_by=created_by[:128],
    )
    transaction.on_commit(forget)
    return reference


def renew(
    algorithm: MLAlgorithm, data: bytes, *, file_name: str = "", created_by: str = ""
) -> tuple[DriftReference | None, Built]:
    """Add or replace a registered version's reference, from a reference file (the
    command and ``POST /api/v1/mlalgorithms/<id>/reference``)."""
    runtime = ml_registry.get_registry().get(algorithm)
    built = build(
        data,
        runtime,
        source=DriftReference.Source.REFERENCE,
        file_name=file_name,
        target_column=algorithm.target_column,
    )
    if built.profile is None:
        raise InvalidInput(built.note, details={"reference": [built.note]})
    with transaction.atomic():
        MLAlgorithm.objects.select_for_update().filter(pk=algorithm.pk).first()
        reference = store(algorithm, built, created_by=created_by)
    return reference, built


# -- the current reference, for the request path ------------------------------------------


@dataclass(frozen=True)
class Current:
    reference_id: int
    profile: drift.Profile


# algorithm id -> its current reference's id or None, for versions that come without it
# (an A/B test's arms, a batch job's versions)
_ids: Remembered[int, int | None] = Remembered()
# reference id -> its profile: a reference never changes (renewing makes a new one)
_profiles: dict[int, drift.Profile] = {}
_MAX_PROFILES = 256


def current(algorithm: MLAlgorithm) -> Current | None:
    """The version's current profile, asked for every scored batch. Its id comes with the
    selection of the version (``catalogue.selectors``, annotated ``drift_reference_id``,
    cached ``PREDICT_CACHE_SECONDS``), else from a query remembered for as long; the
    profile is read and parsed once per process. A renewed reference is used within that
    time by the other processes."""
    annotated = getattr(algorithm, "drift_reference_id", _UNKNOWN)
    reference_id = (
        _reference_id(algorithm.pk) if annotated is _UNKNOWN else cast("int | None", annotated)
    )
    if reference_id is None:
        return None
    profile = _profiles.get(reference_id)
    if profile is None:
        stored = (
            DriftReference.objects.filter(pk=reference_id).values_list("profile", flat=True).first()
        )
        if stored is None:  # replaced and deleted meanwhile
            return None
        if len(_profiles) >= _MAX_PROFILES:
            _profiles.clear()
        profile = _profiles[reference_id] = drift.Profile.from_dict(stored)
    return Current(reference_id, profile)


_UNKNOWN = object()


def _reference_id(algorithm_id: int) -> int | None:
    return _ids.get(
        algorithm_id,
        settings.PREDICT_CACHE_SECONDS,
        lambda: (
            DriftReference.objects.filter(algorithm_id=algorithm_id, replaced_at__isnull=True)
            .values_list("pk", flat=True)
            .first()
        ),
    )


def forget() -> None:
    _ids.forget()
    _profiles.clear()
