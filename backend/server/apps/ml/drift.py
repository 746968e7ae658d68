"""The statistics of drift monitoring (issue 28): is what a model version receives, and what
it answers, still distributed as its reference sample was?

Plain numpy, no Django and no scipy (the tests check every formula against scipy). Four
steps, each a function:

- ``build_profile``: a reference sample summarised per feature (the model's inputs, and its
  outputs as pseudo-features "label" or "prediction"): numeric features by the counts in
  ten quantile bins, categorical ones by the counts of their 50 most frequent values. A
  profile is a few kilobytes of JSON (``Profile.to_dict``).
- ``encode``: served records as integer codes, one int16 per record and feature: a bin, or
  one of the special codes below. Cheap enough for the request path (one row of 15
  features costs some microseconds), so records are coded once and stored as codes.
- ``count``: the codes of a window counted per feature (``np.bincount``).
- ``assess``: each feature's counts compared with its reference: the population stability
  index (PSI), and the Wasserstein distance (numeric) or the Jensen-Shannon distance
  (categorical), each against the larger of a floor and a threshold fitted to the
  reference's size by simulation (``null_thresholds``); and the shares of missing, invalid,
  unseen and out-of-range values against their floors.

docs/drift-statistics.md gives the formulas, the thresholds and bench/drift_simulation.py's
false-alarm rates.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

NUMERIC = "numeric"
CATEGORICAL = "categorical"
INPUT = "input"
OUTPUT = "output"

# Codes >= 0 are distribution bins: numeric 0..k-1 for k bins; categorical 0..m-1 for the
# kept categories and m for "other". The negative codes:
MISSING = -1  # null, NaN
INVALID = -2  # a type error the service refused (text in a number column)
UNSEEN = -3  # categorical: a value the reference never had (only when the profile is complete)
BELOW = -4  # numeric: below the reference's minimum (counted in bin 0, and as out of range)
ABOVE = -5  # numeric: above the reference's maximum (counted in the last bin, and out of range)
ABSENT = -6  # not observed for this record (the outputs of a refused record): excluded
_OFFSET = 6  # added to codes so that np.bincount sees ABSENT as 0

SMOOTHING = 1e-4
MAX_CATEGORIES = 50  # kept per categorical feature, by reference frequency; the rest "other"
QUANTILE_BINS = 10  # numeric: interior edges at the 10 %, ..., 90 % quantiles, deduplicated

# encode() codes this many rows or fewer value by value in Python: a numpy call costs about
# a microsecond whatever its size, which one-row requests would pay a few times per feature
# (measured on Adult's 15 columns: the two ways cost the same at about 40 rows).
_SMALL = 32
# What a numeric feature takes as a number (bool, an int in Python, is not one: true for an
# age is a client's bug, as codecs.py says).
_NUMBERS = (int, float, np.integer, np.floating)

Floats = npt.NDArray[np.float64]
Codes = npt.NDArray[np.int16]


# -- the reference profile ----------------------------------------------------------------


@dataclass(frozen=True)
class FeatureProfile:
    """One feature of the reference sample: enough to code served values and to compare a
    window's counts with the reference's. Frozen and hashable (``null_thresholds`` memoises
    on it)."""

    name: str
    kind: str  # NUMERIC | CATEGORICAL
    role: str  # INPUT | OUTPUT
    rows: int  # reference rows, missing included
    missing: int  # reference rows missing
    # Reference counts per distribution bin: numeric len(edges) + 1; categorical
    # len(categories) + 1, the last "other".
    counts: tuple[int, ...]
    # Numeric interior edges: bin i is (edges[i-1], edges[i]] (searchsorted side="left").
    edges: tuple[float, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    std: float | None = None  # population std of the non-missing reference values
    categories: tuple[str, ...] = ()  # kept categories as text, by descending frequency
    complete: bool = True  # every distinct reference value is kept (so UNSEEN means new)
    # What encode() looks values up in, built once per profile (not part of its identity).
    _table: dict[Any, int] = field(init=False, repr=False, compare=False)
    _edge_list: list[float] = field(init=False, repr=False, compare=False)
    _edge_array: Floats = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Tuples of plain Python numbers whatever the caller passed (lists, numpy scalars):
        # the profile must hash, and its to_dict() must be JSON.
        set_ = functools.partial(object.__setattr__, self)
        set_("counts", tuple(int(c) for c in self.counts))
        set_("edges", tuple(float(e) for e in self.edges))
        set_("categories", tuple(str(c) for c in self.categories))
        for name in ("minimum", "maximum", "std"):
            value = getattr(self, name)
            set_(name, None if value is None else float(value))
        expected = len(self.edges) + 1 if self.kind == NUMERIC else len(self.categories) + 1
        if self.kind not in (NUMERIC, CATEGORICAL) or self.role not in (INPUT, OUTPUT):
            raise ValueError(f"{self.name}: kind {self.kind!r} or role {self.role!r} unknown.")
        if len(self.counts) != expected:
            raise ValueError(f"{self.name}: {len(self.counts)} counts for {expected} bins.")
        table: dict[Any, int] = {c: i for i, c in enumerate(self.categories)}
        table[None] = MISSING
        set_("_table", table)
        set_("_edge_list", list(self.edges))
        set_("_edge_array", np.array(self.edges, dtype=np.float64))

    def reference_bins(self) -> npt.NDArray[np.int64]:
        """The reference's counts over the same bins as a window's (unseen: 0)."""
        extra = [0] if self.kind == CATEGORICAL else []
        return np.array([*self.counts, *extra], dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "role": self.role,
            "rows": self.rows,
            "missing": self.missing,
            "counts": list(self.counts),
        }
        if self.kind == NUMERIC:
            out.update(
                edges=list(self.edges), minimum=self.minimum, maximum=self.maximum, std=self.std
            )
        else:
            out.update(categories=list(self.categories), complete=self.complete)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureProfile:
        return cls(
            name=data["name"],
            kind=data["kind"],
            role=data["role"],
            rows=data["rows"],
            missing=data["missing"],
            counts=tuple(data["counts"]),
            edges=tuple(data.get("edges", ())),
            minimum=data.get("minimum"),
            maximum=data.get("maximum"),
            std=data.get("std"),
            categories=tuple(data.get("categories", ())),
            complete=data.get("complete", True),
        )

    def labels(self) -> list[str]:
        """A label per distribution bin, for histograms: "≤ 25", "25 – 33", ..., "> 61" (an
        en dash between the bounds); the category names, then "other" and "unseen"."""  # noqa: RUF002
        if self.kind == CATEGORICAL:
            return [*self.categories, "other", "unseen"]
        if not self.edges:
            return ["all"]
        texts = _compact_numbers(self.edges)
        middle = [f"{a} {_EN_DASH} {b}" for a, b in itertools.pairwise(texts)]
        return [f"≤ {texts[0]}", *middle, f"> {texts[-1]}"]


_EN_DASH = "\u2013"  # typography's range sign; a hyphen would read as a minus


def _compact_numbers(values: Sequence[float]) -> list[str]:
    """The numbers with as few significant digits (3 or more) as keep them distinct; no
    exponent for large numbers (an edge of fnlwgt is "117827", not "1.18e+05")."""
    for digits in range(3, 18):
        texts = [_number(v, digits) for v in values]
        if len(set(texts)) == len(set(values)):
            return texts
    return [repr(v) for v in values]


def _number(value: float, digits: int) -> str:
    if value == 0 or abs(value) < 1:
        return f"{value:.{digits}g}"
    decimals = max(0, digits - len(str(int(abs(value)))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True)
class Profile:
    """A model version's reference profile: inputs first (in their order), then outputs."""

    rows: int
    features: tuple[FeatureProfile, ...]
    _columns: dict[tuple[str, str], int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        columns = {(f.name, f.role): i for i, f in enumerate(self.features)}
        if len(columns) != len(self.features):
            raise ValueError("A feature name appears twice in the same role.")
        object.__setattr__(self, "_columns", columns)

    def index(self, name: str, role: str = INPUT) -> int:
        """The column of that feature in the codes matrix."""
        try:
            return self._columns[(name, role)]
        except KeyError:
            raise KeyError(f"No {role} feature {name!r} in this profile.") from None

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "features": [f.to_dict() for f in self.features]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        features = tuple(FeatureProfile.from_dict(f) for f in data["features"])
        return cls(rows=data["rows"], features=features)


def build_profile(
    inputs: Sequence[tuple[str, str, np.ndarray]],
    outputs: Sequence[tuple[str, str, np.ndarray]] = (),
) -> Profile:
    """Profile a reference sample given as (name, kind, values) per feature: NUMERIC values
    float64 with NaN for missing; CATEGORICAL values an object array (strings, numbers or
    booleans, compared as ``str(value)``; None or NaN for missing)."""
    columns = [(spec, INPUT) for spec in inputs] + [(spec, OUTPUT) for spec in outputs]
    lengths = {len(values) for (_, _, values), _ in columns}
    if len(lengths) > 1:
        raise ValueError(f"The reference's columns differ in length: {sorted(lengths)}.")
    rows = lengths.pop() if lengths else 0
    features = []
    for (name, kind, values), role in columns:
        if kind == NUMERIC:
            features.append(_numeric_profile(name, role, values))
        elif kind == CATEGORICAL:
            features.append(_categorical_profile(name, role, values))
        else:
            raise ValueError(f"{name}: kind {kind!r} is neither {NUMERIC!r} nor {CATEGORICAL!r}.")
    return Profile(rows=rows, features=tuple(features))


def _numeric_profile(name: str, role: str, values: np.ndarray) -> FeatureProfile:
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    if not np.isfinite(present).all():
        raise ValueError(
            f"{name}: the reference holds an infinite value; the service refuses them."
        )
    if present.size == 0:
        return FeatureProfile(name, NUMERIC, role, len(values), len(values), counts=(0,))
    levels = np.arange(1, QUANTILE_BINS) / QUANTILE_BINS
    # np.unique both sorts and deduplicates: a column that is 90 % zeros has one edge, 0.
    edges = np.unique(np.quantile(present, levels))
    counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(edges) + 1)
    return FeatureProfile(
        name,
        NUMERIC,
        role,
        rows=len(values),
        missing=len(values) - present.size,
        counts=tuple(counts),
        edges=tuple(edges),
        minimum=float(present.min()),
        maximum=float(present.max()),
        std=float(present.std()),
    )


def _categorical_profile(name: str, role: str, values: np.ndarray) -> FeatureProfile:
    texts = [str(v) for v in values if not _missing(v)]
    # Most frequent first; ties by text, so that the same sample gives the same profile.
    frequencies = sorted(Counter(texts).items(), key=lambda item: (-item[1], item[0]))
    kept = frequencies[:MAX_CATEGORIES]
    other = sum(n for _, n in frequencies[MAX_CATEGORIES:])
    return FeatureProfile(
        name,
        CATEGORICAL,
        role,
        rows=len(values),
        missing=len(values) - len(texts),
        counts=(*(n for _, n in kept), other),
        categories=tuple(c for c, _ in kept),
        complete=len(frequencies) <= MAX_CATEGORIES,
    )


def _missing(value: Any) -> bool:
    # None is the service's missing value; NaN is pandas' (a frame read from a CSV file).
    return value is None or (isinstance(value, float) and math.isnan(value))


# -- codes ----------------------------------------------------------------------------------


def encode(
    profile: Profile,
    columns: Mapping[str, np.ndarray | Sequence[Any]],
    outputs: Mapping[str, np.ndarray | Sequence[Any]] | None = None,
    rows: int | None = None,
) -> Codes:
    """The codes of served records: a (rows, features) int16 matrix, C-ordered, a column per
    profile feature. A feature missing from ``columns`` (inputs) or ``outputs`` is ABSENT for
    every record. Numeric: NaN or None MISSING, a non-number (text, a boolean) INVALID,
    below the minimum BELOW, above the maximum ABOVE, else the bin. Categorical: None or
    NaN MISSING, a list or object INVALID, a kept category its index, anything else "other"
    (an incomplete profile) or UNSEEN."""
    n = rows if rows is not None else _rows_of(columns, outputs)
    given = [columns.get(f.name) if f.role == INPUT else None for f in profile.features]
    if outputs is not None:
        for j, f in enumerate(profile.features):
            if f.role == OUTPUT:
                given[j] = outputs.get(f.name)
    for f, values in zip(profile.features, given, strict=True):
        if values is not None and len(values) != n:
            raise ValueError(f"{f.name}: {len(values)} values for {n} rows.")
    if n <= _SMALL:
        absent = [ABSENT] * n
        coded = [
            absent if values is None else _codes_of_few(f, _as_list(values))
            for f, values in zip(profile.features, given, strict=True)
        ]
        return np.array(coded, dtype=np.int16).reshape(len(coded), n).T.copy()
    out = np.full((n, len(profile.features)), ABSENT, dtype=np.int16)
    for j, (f, values) in enumerate(zip(profile.features, given, strict=True)):
        if values is not None:
            out[:, j] = (
                _numeric_codes(f, values) if f.kind == NUMERIC else _category_codes(f, values)
            )
    return out


def _rows_of(columns: Mapping[str, Any], outputs: Mapping[str, Any] | None) -> int:
    for values in [*columns.values(), *(outputs or {}).values()]:
        return len(values)
    raise ValueError("No column to count the rows of: pass rows=.")


def _as_list(values: np.ndarray | Sequence[Any]) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _codes_of_few(f: FeatureProfile, values: list[Any]) -> list[int]:
    if f.kind == CATEGORICAL:
        return _category_list(f, values)
    edges, low, high = f._edge_list, f.minimum, f.maximum
    out = []
    for v in values:
        if type(v) is not float:  # the common case, a float from a float64 column
            if v is None:
                out.append(MISSING)
                continue
            if isinstance(v, bool) or not isinstance(v, _NUMBERS):
                out.append(INVALID)
                continue
        if v != v:  # NaN
            out.append(MISSING)
        elif low is not None and v < low:
            out.append(BELOW)
        elif high is not None and v > high:
            out.append(ABOVE)
        else:
            out.append(bisect.bisect_left(edges, v))
    return out


def _numeric_codes(f: FeatureProfile, values: np.ndarray | Sequence[Any]) -> Codes:
    numbers, invalid = _as_numbers(values)
    codes = np.searchsorted(f._edge_array, numbers, side="left").astype(np.int16)
    if f.minimum is not None and f.maximum is not None:
        codes[numbers < f.minimum] = BELOW
        codes[numbers > f.maximum] = ABOVE
    codes[np.isnan(numbers)] = MISSING
    if invalid is not None:
        codes[invalid] = INVALID
    return codes


def _as_numbers(values: np.ndarray | Sequence[Any]) -> tuple[Floats, npt.NDArray[np.bool_] | None]:
    """float64 (NaN where missing) and where a value is not a number (None if nowhere)."""
    array = np.asarray(values) if not isinstance(values, np.ndarray) else values
    if array.dtype.kind in "fiu":
        return array.astype(np.float64, copy=False), None
    items = array.tolist()
    invalid = np.array(
        [v is not None and (isinstance(v, bool) or not isinstance(v, _NUMBERS)) for v in items],
        dtype=bool,
    )
    numbers = np.array(
        [math.nan if bad or v is None else v for v, bad in zip(items, invalid, strict=True)],
        dtype=np.float64,
    )
    return numbers, invalid


def _category_codes(f: FeatureProfile, values: np.ndarray | Sequence[Any]) -> Codes:
    return np.array(_category_list(f, _as_list(values)), dtype=np.int16)


_SLOW = -100  # a code no value has: "look this one up the slow way"


def _category_list(f: FeatureProfile, values: list[Any]) -> list[int]:
    table = f._table
    default = len(f.categories) if not f.complete else UNSEEN
    try:
        # Text values (the common case) are looked up as they are; the sentinel sends
        # anything else (a number, NaN, a text not kept) to the slow path below.
        codes = [table.get(v, _SLOW) for v in values]
    except TypeError:  # an unhashable value (a list, an object)
        codes = [_SLOW] * len(values)
    for i, code in enumerate(codes):
        if code == _SLOW:
            codes[i] = _category_code(table, default, values[i])
    return codes


def _category_code(table: dict[Any, int], default: int, value: Any) -> int:
    if _missing(value):
        return MISSING
    if isinstance(value, (list, dict, tuple, set)):
        return INVALID
    return table.get(str(value), default)


# -- counts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureCounts:
    """A window's codes of one feature, counted."""

    observed: int  # records whose code is not ABSENT
    # Distribution counts: numeric k bins (BELOW in bin 0, ABOVE in bin k-1); categorical the
    # kept categories, "other", then "unseen".
    bins: npt.NDArray[np.int64]
    missing: int
    invalid: int
    unseen: int
    out_of_range: int


def count(profile: Profile, codes: np.ndarray) -> list[FeatureCounts]:
    """Count a window's codes (``encode``'s matrix, or stored rows of it) per feature."""
    if codes.ndim != 2 or codes.shape[1] != len(profile.features):
        raise ValueError(
            f"Codes of shape {codes.shape} do not match a profile of "
            f"{len(profile.features)} features."
        )
    out = []
    for j, f in enumerate(profile.features):
        column = codes[:, j].astype(np.intp) + _OFFSET
        if column.size and column.min() < 0:
            raise ValueError(f"{f.name}: a code below {ABSENT}.")
        tally = np.bincount(column, minlength=_OFFSET + len(f.counts))
        if len(tally) > _OFFSET + len(f.counts):
            raise ValueError(f"{f.name}: a code beyond its {len(f.counts)} bins.")
        bins = tally[_OFFSET:].astype(np.int64)
        below, above = int(tally[_OFFSET + BELOW]), int(tally[_OFFSET + ABOVE])
        unseen = int(tally[_OFFSET + UNSEEN])
        if f.kind == NUMERIC:
            bins[0] += below
            bins[-1] += above
        else:
            bins = np.append(bins, unseen)
        out.append(
            FeatureCounts(
                observed=int(codes.shape[0] - tally[_OFFSET + ABSENT]),
                bins=bins,
                missing=int(tally[_OFFSET + MISSING]),
                invalid=int(tally[_OFFSET + INVALID]),
                unseen=unseen,
                out_of_range=below + above,
            )
        )
    return out


# -- measures -------------------------------------------------------------------------------
# Each measure has a form over many pairs of distributions at once (rows of 2-D arrays of
# shares), which null_thresholds simulates with, and the one-pair form assess() uses: the
# same code, so the simulated thresholds are those of the production formulas.


def _pair(reference: npt.ArrayLike, current: npt.ArrayLike) -> tuple[Floats, Floats]:
    r, c = _shares(reference), _shares(current)
    if r.shape != c.shape:
        raise ValueError(f"Distributions over {r.shape[-1]} and {c.shape[-1]} bins.")
    return r, c


def _shares(counts: npt.ArrayLike) -> Floats:
    array = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    totals = array.sum(axis=-1, keepdims=True)
    if (totals <= 0).any() or (array < 0).any():
        raise ValueError("A distribution needs non-negative counts that are not all zero.")
    return np.asarray(array / totals, dtype=np.float64)


def _psi_rows(reference: Floats, current: Floats, smoothing: float) -> Floats:
    k = reference.shape[-1]
    r = (reference + smoothing) / (1 + k * smoothing)
    c = (current + smoothing) / (1 + k * smoothing)
    return np.asarray(((c - r) * np.log(c / r)).sum(axis=-1), dtype=np.float64)


def _js_rows(reference: Floats, current: Floats) -> Floats:
    middle = (reference + current) / 2

    def kl(p: Floats) -> Floats:
        # 0 log 0 = 0; where p > 0, middle > 0 too.
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log2(p / middle), 0.0)
        return np.asarray(terms.sum(axis=-1), dtype=np.float64)

    divergence = (kl(reference) + kl(current)) / 2
    return np.sqrt(np.clip(divergence, 0.0, 1.0))


def _wasserstein_rows(centres: Floats, reference: Floats, current: Floats) -> Floats:
    # On a line, W1 is the area between the two distribution functions: between centres i
    # and i+1 they differ by the difference of their cumulative sums up to i.
    gaps = np.abs(np.cumsum(reference - current, axis=-1)[..., :-1])
    return np.asarray((gaps * np.diff(centres)).sum(axis=-1), dtype=np.float64)


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, smoothing: float = SMOOTHING) -> float:
    """Population stability index of two distributions (counts or shares over the same
    bins). Each is smoothed, (share + smoothing) / (1 + k * smoothing), so that an empty bin
    costs a finite amount; then PSI = sum((c - r) ln(c / r)), which is KL(c||r) + KL(r||c)
    (Yurdakul, "Statistical properties of the population stability index", 2018, eq. 1)."""
    return float(_psi_rows(*_pair(reference, current), smoothing)[0])


def js_distance(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """Jensen-Shannon distance, base 2 (0 to 1): the square root of the mean KL divergence
    of each distribution from their mixture (Lin, "Divergence measures based on the Shannon
    entropy", 1991; Endres and Schindelin 2003 for the square root being a metric)."""
    return float(_js_rows(*_pair(reference, current))[0])


def centres(feature: FeatureProfile) -> Floats:
    """Each numeric bin's centre, the outer bins closed at the reference's minimum and
    maximum (bin 0 is [minimum, edges[0]], the last [edges[-1], maximum])."""
    if feature.minimum is None or feature.maximum is None:
        raise ValueError(f"{feature.name}: no reference values, so no bin centres.")
    bounds = np.array([feature.minimum, *feature.edges, feature.maximum], dtype=np.float64)
    return np.asarray((bounds[:-1] + bounds[1:]) / 2, dtype=np.float64)


def wasserstein(
    feature: FeatureProfile, reference: npt.ArrayLike, current: npt.ArrayLike
) -> float | None:
    """1-D Wasserstein distance between two histograms over the feature's bins, each bin's
    mass at its centre, in units of the reference's standard deviation (None when that is
    0 or unknown). W1 = integral of |F_r - F_c| (Vallender, "Calculation of the Wasserstein
    distance between probability distributions on the line", 1974)."""
    if not feature.std:
        return None
    distance = _wasserstein_rows(centres(feature), *_pair(reference, current))[0]
    return float(distance) / feature.std


# -- thresholds fitted to the reference -----------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """The floors: a measure flags at max(floor, fitted), a share at its floor."""

    psi: float = 0.2
    wasserstein: float = 0.1
    js: float = 0.1
    unseen: float = 0.05
    invalid: float = 0.05
    out_of_range: float = 0.05
    missing_points: float = 0.10  # the window's missing share minus the reference's
    min_rows: int = 500  # no flag for a feature observed in fewer records of the window
    # The fitted thresholds: this quantile of the measure's null distribution, simulated
    # this many times. Against 500-row samples of Adult, 0.99 of 400 flagged drift-free
    # windows up to 2.7 % of the time per feature (native-country; fnlwgt 1.9 %): the
    # bootstrap is a little too narrow. 0.999 of 2,000 keeps every feature at or under 1 %
    # (docs/drift-statistics.md); only small references feel it, a large one keeps the floors.
    quantile: float = 0.999
    simulations: int = 2000


def null_thresholds(
    feature: FeatureProfile,
    window: int,
    *,
    quantile: float = Thresholds.quantile,
    simulations: int = Thresholds.simulations,
    seed: int = 0,
) -> dict[str, float]:
    """The ``quantile`` of each measure when nothing changed, for a window of ``window``
    non-missing values against this reference. A small reference is itself a noisy sample,
    so fixed thresholds fire by chance; this says how far apart two samples of those sizes
    drift with no change at all.

    A parametric bootstrap (Efron and Tibshirani, "An introduction to the bootstrap", 1993,
    ch. 6): r ~ Multinomial(the reference's non-missing rows, p) and c ~ Multinomial(window,
    p), with p the reference's bin shares, and the measures (psi, and wasserstein or js)
    between r / |r| and c / |c|. A complete categorical feature has two refinements, both
    for what a small reference lacks: the window's p gives the unseen bin the Good-Turing
    share of values seen once in the reference (Good, "The population frequencies of
    species", 1953), and a category a simulated reference never drew is unseen in its
    window, as it would be in the service. Seeded, so deterministic; memoised on (feature,
    window, quantile, simulations, seed). {} when either side has no values."""
    return dict(_null_thresholds(feature, window, quantile, simulations, seed))


@functools.lru_cache(maxsize=4096)
def _null_thresholds(
    feature: FeatureProfile, window: int, quantile: float, simulations: int, seed: int
) -> tuple[tuple[str, float], ...]:
    p = feature.reference_bins().astype(np.float64)
    size = int(p.sum())
    if window <= 0 or size <= 0:
        return ()
    p /= p.sum()
    q = p.copy()
    if feature.kind == CATEGORICAL and feature.complete:
        # Good-Turing: the chance that the next value is one the sample never had is about
        # the share of values seen once. Without it, a small reference's thresholds ignore
        # the unseen values every window of its population holds (native-country: 2 %
        # of a window against 500 reference rows), and flag them.
        unseen = sum(1 for n in feature.counts[:-1] if n == 1) / size
        q *= 1 - unseen
        q[-1] = unseen
    rng = np.random.default_rng(seed)
    r = rng.multinomial(size, p, size=simulations)
    c = rng.multinomial(window, q, size=simulations)
    if feature.kind == CATEGORICAL and feature.complete:
        # As in the service: a category the simulated reference never drew is unseen in
        # the window. This gives the unseen share the spread it has between references,
        # which PSI, with its ln(share / 1e-4) for an empty reference bin, is sensitive to.
        missed = r[:, :-2] == 0
        c[:, -1] += np.where(missed, c[:, :-2], 0).sum(axis=1)
        c[:, :-2][missed] = 0
    r_shares: Floats = r / size
    c_shares: Floats = c / window
    measures = {"psi": _psi_rows(r_shares, c_shares, SMOOTHING)}
    if feature.kind == CATEGORICAL:
        measures["js"] = _js_rows(r_shares, c_shares)
    elif feature.std:
        measures["wasserstein"] = (
            _wasserstein_rows(centres(feature), r_shares, c_shares) / feature.std
        )
    return tuple((name, float(np.quantile(values, quantile))) for name, values in measures.items())


def _window_size(n: int) -> int:
    """``n`` rounded down to two significant digits (4,873 -> 4,800): the fitted thresholds
    of a growing window are simulated once per hundredth of a decade instead of once per
    record, and a smaller window's threshold is the larger, so the rounding is cautious."""
    if n < 100:
        return n
    scale = int(10 ** (len(str(n)) - 2))
    return (n // scale) * scale


# -- assessment -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    role: str
    kind: str
    rows: int  # records of the window in which the feature was observed
    # "psi", and "wasserstein" (numeric) or "js" (categorical); None without values.
    measures: dict[str, float | None]
    # The effective threshold of each measure and share (the floors while the feature is
    # observed in fewer than min_rows records).
    thresholds: dict[str, float]
    # "missing", "reference_missing", "invalid", and "unseen" (categorical; None when the
    # profile is not complete) or "out_of_range" (numeric); None without observed records.
    shares: dict[str, float | None]
    flags: tuple[str, ...]  # the measures and shares that reached their threshold
    reference: tuple[float, ...]  # shares per distribution bin (FeatureProfile.labels())
    current: tuple[float, ...]

    @property
    def drifting(self) -> bool:
        return bool(self.flags)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "kind": self.kind,
            "rows": self.rows,
            "measures": dict(self.measures),
            "thresholds": dict(self.thresholds),
            "shares": dict(self.shares),
            "flags": list(self.flags),
            "drifting": self.drifting,
            "reference": list(self.reference),
            "current": list(self.current),
        }


def assess(
    profile: Profile,
    codes: np.ndarray,
    thresholds: Thresholds = Thresholds(),  # frozen, so one shared default is safe
    *,
    fitted: bool = True,
) -> list[FeatureDrift]:
    """Compare a window's codes with the reference, feature by feature. A measure flags at
    max(floor, fitted) (``fitted=False``: at the floor, as bench/drift_simulation.py
    compares). Nothing flags for a feature observed in fewer than ``min_rows`` records of
    the window, so nothing at all before the window holds that many: not the outputs of a
    window of mostly refused records either, whose shares would rest on a handful."""
    return [
        _assess_feature(f, counts, thresholds, fitted)
        for f, counts in zip(profile.features, count(profile, codes), strict=True)
    ]


def _assess_feature(
    f: FeatureProfile, counts: FeatureCounts, floors: Thresholds, fitted: bool
) -> FeatureDrift:
    reference, current = f.reference_bins(), counts.bins
    values = int(current.sum())
    measures: dict[str, float | None] = {"psi": None}
    second = "js" if f.kind == CATEGORICAL else "wasserstein"
    measures[second] = None
    if values and reference.sum():
        measures["psi"] = psi(reference, current)
        measures[second] = (
            js_distance(reference, current)
            if f.kind == CATEGORICAL
            else wasserstein(f, reference, current)
        )
    limits = {"psi": floors.psi, second: getattr(floors, second)}
    observed = counts.observed
    # Below min_rows nothing flags, so the floors stand: fitting them would simulate every
    # size a young window passes through.
    if fitted and values and observed >= floors.min_rows:
        null = null_thresholds(
            f, _window_size(values), quantile=floors.quantile, simulations=floors.simulations
        )
        limits = {name: max(limit, null.get(name, 0.0)) for name, limit in limits.items()}

    shares = {
        "missing": counts.missing / observed if observed else None,
        "reference_missing": f.missing / f.rows if f.rows else None,
        "invalid": counts.invalid / observed if observed else None,
    }
    if f.kind == CATEGORICAL:
        shares["unseen"] = counts.unseen / observed if observed and f.complete else None
        limits["unseen"] = floors.unseen
    else:
        shares["out_of_range"] = counts.out_of_range / observed if observed else None
        limits["out_of_range"] = floors.out_of_range
    limits["missing"] = floors.missing_points
    limits["invalid"] = floors.invalid

    flags: list[str] = []
    if observed >= floors.min_rows:
        flags = [m for m in ("psi", second) if (v := measures[m]) is not None and v >= limits[m]]
        missing, before = shares["missing"], shares["reference_missing"]
        if missing is not None and missing - (before or 0.0) >= limits["missing"]:
            flags.append("missing")
        for name in ("invalid", "unseen", "out_of_range"):
            share = shares.get(name)
            if share is not None and share >= limits[name]:
                flags.append(name)
    return FeatureDrift(
        name=f.name,
        role=f.role,
        kind=f.kind,
        rows=observed,
        measures=measures,
        thresholds=limits,
        shares=shares,
        flags=tuple(flags),
        reference=_fractions(reference),
        current=_fractions(current),
    )


def _fractions(counts: npt.NDArray[np.int64]) -> tuple[float, ...]:
    total = counts.sum()
    return tuple(float(c) / total if total else 0.0 for c in counts.tolist())
