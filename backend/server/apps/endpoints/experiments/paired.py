"""Paired comparison of a shadow model with production: both answer the same requests, and
each request with feedback gives one pair. Pure functions, no Django.

An A/B test (``sequential.py``) sends each request to one arm, so its two means come from
different requests and the difference carries both arms' full variance. A shadow answers
a copy of every production request, so each labelled request scores both models and the
comparison is *paired*: one observation per request,

    d = 1[shadow right] - 1[production right]   in {-1, 0, 1}   (classifiers, "accuracy")
    d = |e_production| - |e_shadow|                              (regressors, "mae")

positive when the shadow did better. Its mean is the shadow's accuracy minus production's,
or production's mean absolute error minus the shadow's. Requests both models find equally
hard or easy cancel out: var(d) = var(x_p) + var(x_s) - 2 cov(x_p, x_s), with x = 1[right]
or |e|, is far below the unpaired var(x_p) + var(x_s) when the models mostly agree
(``pairing_gain``).

**The sequence.** The mean of d is a one-sample problem, so the asymptotic confidence
sequence of Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas (2023), "Time-uniform central
limit theory and asymptotic confidence sequences", arXiv 2103.06476, applies as it stands,
with the normal-mixture boundary and the rho^2 of ``sequential.py`` (Howard, Ramdas,
McAuliffe and Sekhon 2021). After n pairs:

    estimate   = sum_d / n
    sigma^2    = the plug-in variance of d, with a floor (below)
    rho^2      = (2 ln(1/alpha) + ln(1 + 2 ln(1/alpha))) / N,   N the pairs planned
    half-width = sigma * sqrt(2 (n rho^2 + 1) / (n^2 rho^2) * ln(sqrt(n rho^2 + 1) / alpha))
    p          = min(1, sqrt(1 + n rho^2) * exp(-n rho^2 z^2 / (2 (1 + n rho^2)))),
                 z = estimate / (sigma / sqrt(n))

It covers the mean of d at every n at once with probability at least 1 - alpha
(asymptotically: the pairs must be independent draws of the labelled traffic with a finite
variance), so stopping at the first look that excludes 0 names a false winner at most alpha
of the time however often one looks. As in ``sequential.py`` no look decides before
``MIN_COUNT`` pairs, and the running minimum of the looks' p-values is the always-valid
p-value (the caller keeps it).

**At the end,** fixed-horizon tests for one look decided in advance: McNemar's exact test
for classifiers (``mcnemar``; McNemar 1947, the binomial test of the discordant pairs) and
the Wilcoxon signed-rank test for regressors (``wilcoxon``; Wilcoxon 1945), which tests the
pseudo-median of d, not its mean.

Everything the sequence needs is a handful of running sums (``PairedMoments``), which the
service keeps as counters on a row, so a look is O(1); ``paired_bounds`` is vectorised over
numpy arrays of them for the simulation in bench/shadow_simulation.py.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import stats

from apps.endpoints.experiments.sequential import (
    DEFAULT_ALPHA,
    DEFAULT_PLANNED,
    METRICS,
    MIN_COUNT,
    FloatArray,
    FloatOrArray,
    always_valid_p,
    half_width,
    rho_squared,
)

# Floors under the plug-in variance of d, so that a run of pairs without spread so far
# cannot collapse the sequence onto its point estimate:
# - classifiers: one pseudo pair of each sign (d = +1 and d = -1; their sum is 0, so the
#   estimate is untouched), i.e. var = (b + c + 2) / (n + 2) - (sum_d / (n + 2))^2. The
#   variance of d is about the discordance rate (b + c) / n, and models that mostly agree
#   give only a handful of discordant pairs among the first looks' 30 to 100: a run of 30
#   concordant pairs has plug-in variance 0, 3 discordant pairs all of one sign look like a
#   sure winner. This is the paired counterpart of sequential.py's pseudo success and
#   failure per arm; Agresti and Min (2005, Statistics in Medicine 24(5)) add 1/2 to each
#   cell of the 2 x 2 table for the same reason, we add 1 to each discordant cell, which is
#   more cautious early and moves the variance by O(1/n) late;
# - regressors: a standard deviation of d of at least 1 % of the mean absolute error of
#   the two models together. Much lower than sequential.py's 10 % of an arm's MAE, on
#   purpose: pairing exists because d varies much less than |e| does; two gradient boosting
#   models on load_diabetes that differ only in their seed have sd(d) = 2.6 % of their MAE
#   (five-fold out-of-fold errors), distinct models 29 to 49 %. The floor only stops a
#   variance of 0 (every difference alike so far); both models perfect gives no floor, an
#   estimate of 0 and no decision.
DISCORDANT_PSEUDO_COUNT = 1.0
PAIRED_RELATIVE_SD_FLOOR = 0.01

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class PairedMoments:
    """Running sums over the pairs so far, x = 1[right] (accuracy) or |e| (mae), d as in
    the module docstring; b and c count the discordant pairs of a classifier (0 for a
    regressor)."""

    n: int = 0  # pairs with feedback
    sum_d: float = 0.0
    sum_d2: float = 0.0
    sum_p: float = 0.0  # production's x
    sum_p2: float = 0.0
    sum_s: float = 0.0  # the shadow's x
    sum_s2: float = 0.0
    b: int = 0  # production right, shadow wrong
    c: int = 0  # shadow right, production wrong

    def __post_init__(self) -> None:
        if min(self.n, self.b, self.c) < 0:
            raise ValueError(f"Counts cannot be negative; got n={self.n}, b={self.b}, c={self.c}.")
        if self.b + self.c > self.n:
            raise ValueError(f"At most n pairs can be discordant; got {self}.")
        sums = [getattr(self, f.name) for f in fields(self) if f.name.startswith("sum_")]
        if not all(math.isfinite(s) for s in sums):
            raise ValueError(f"The sums must be finite; got {self}.")

    @classmethod
    def of(
        cls,
        production_x: npt.ArrayLike,
        shadow_x: npt.ArrayLike,
        *,
        metric: str,
    ) -> PairedMoments:
        """The moments of these pairs: ``production_x[i]`` and ``shadow_x[i]`` are the two
        models' x on request i (1.0 / 0.0 for right / wrong, or absolute errors)."""
        x_p, x_s = _paired_arrays(production_x, shadow_x, metric=metric)
        d = differences(x_p, x_s, metric=metric)
        bernoulli = metric == "accuracy"
        return cls(
            n=len(d),
            sum_d=float(d.sum()),
            sum_d2=float(np.square(d).sum()),
            sum_p=float(x_p.sum()),
            sum_p2=float(np.square(x_p).sum()),
            sum_s=float(x_s.sum()),
            sum_s2=float(np.square(x_s).sum()),
            b=int(((x_p == 1) & (x_s == 0)).sum()) if bernoulli else 0,
            c=int(((x_p == 0) & (x_s == 1)).sum()) if bernoulli else 0,
        )

    def add(self, production_x: float, shadow_x: float, *, metric: str) -> PairedMoments:
        """The moments with one more pair (a new feedback)."""
        return self + PairedMoments.of([production_x], [shadow_x], metric=metric)

    def __add__(self, other: PairedMoments) -> PairedMoments:
        return PairedMoments(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(self))
        )

    def __sub__(self, other: PairedMoments) -> PairedMoments:
        """Take pairs out again: a revised feedback is ``moments - old + new``."""
        return PairedMoments(
            *(getattr(self, f.name) - getattr(other, f.name) for f in fields(self))
        )

    @property
    def mean_d(self) -> float:
        """The estimate: mean of d, positive when the shadow did better; NaN without pairs."""
        return self.sum_d / self.n if self.n else math.nan


def differences(production_x: npt.ArrayLike, shadow_x: npt.ArrayLike, *, metric: str) -> FloatArray:
    """d per pair, positive when the shadow did better: x_s - x_p for accuracy (x = 1 when
    right), x_p - x_s for mae (x = |e|)."""
    _check_metric(metric)
    x_p, x_s = np.asarray(production_x, dtype=float), np.asarray(shadow_x, dtype=float)
    d: FloatArray = x_s - x_p if metric == "accuracy" else x_p - x_s
    return d


class PairedBounds(NamedTuple):
    """One look at many paired tests at once (arrays of the same shape)."""

    estimate: FloatArray  # mean d; NaN without pairs
    lower: FloatArray
    upper: FloatArray
    p_value: FloatArray  # this look's; 1 below MIN_COUNT pairs
    decided: BoolArray  # at least MIN_COUNT pairs and the sequence excludes 0


def paired_bounds(
    n: FloatOrArray,
    sum_d: FloatOrArray,
    sum_d2: FloatOrArray,
    sum_p: FloatOrArray,
    sum_s: FloatOrArray,
    *,
    metric: str,
    alpha: float,
    rho2: float,
) -> PairedBounds:
    """The confidence sequence for the mean of d at one look, for arrays of tests: what
    ``paired_sequence`` reports and what the simulation runs. ``sum_p`` and ``sum_s`` (the
    models' sums of x) only set the floor of a regressor's variance.

    No pair gives the whole line (for accuracy, [-1, 1]); a regressor with one pair an
    unbounded sequence. Accuracy bounds are clipped to [-1, 1], which can only make them
    truer."""
    _check_metric(metric)
    bernoulli = metric == "accuracy"
    count = np.asarray(n, dtype=float)
    seen = np.maximum(count, 1)  # no division by 0
    estimate = np.asarray(sum_d, dtype=float) / seen
    variance = _variance_of_d(count, sum_d, sum_d2, sum_p, sum_s, bernoulli=bernoulli)
    radius = np.asarray(half_width(np.sqrt(variance), seen, rho2, alpha))
    empty = count < 1
    lower = np.where(empty, -np.inf, estimate - radius)
    upper = np.where(empty, np.inf, estimate + radius)
    if bernoulli:
        lower, upper = np.maximum(lower, -1.0), np.minimum(upper, 1.0)
    standard_error = np.sqrt(variance / seen)
    # A zero standard error happens only when every error of both models is 0 (estimate 0);
    # an infinite one (a regressor's single pair) gives z = 0 as it should.
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(standard_error > 0, estimate / standard_error, 0.0)
    ready = count >= MIN_COUNT
    return PairedBounds(
        estimate=np.where(empty, np.nan, estimate),
        lower=lower,
        upper=upper,
        p_value=np.where(ready, always_valid_p(z, seen, rho2), 1.0),
        decided=ready & ((lower > 0) | (upper < 0)),
    )


class PairedSequence(NamedTuple):
    """One look at one shadow: the confidence sequence for the mean of d."""

    n: int  # pairs
    estimate: float  # mean d, positive when the shadow did better; NaN without pairs
    lower: float
    upper: float
    p_value: float  # this look's always-valid p; the caller keeps the running minimum
    decided: bool  # at least MIN_COUNT pairs and the sequence excludes 0
    better: str | None  # "shadow" or "production" once decided


def paired_sequence(
    moments: PairedMoments,
    *,
    metric: str,
    alpha: float = DEFAULT_ALPHA,
    planned: int = DEFAULT_PLANNED,
) -> PairedSequence:
    """The confidence sequence for the mean of d after the pairs so far; ``metric`` is
    "accuracy" or "mae" and ``planned`` the number of pairs (labelled requests) the
    mixture is tuned for: the sequence is narrowest, relative to a fixed interval, there."""
    _check_consistent(moments, metric=metric)
    look = paired_bounds(
        moments.n, moments.sum_d, moments.sum_d2, moments.sum_p, moments.sum_s,
        metric=metric, alpha=alpha, rho2=rho_squared(alpha, planned),
    )  # fmt: skip
    estimate, decided = float(look.estimate), bool(look.decided)
    return PairedSequence(
        n=moments.n,
        estimate=estimate,
        lower=float(look.lower),
        upper=float(look.upper),
        p_value=float(look.p_value),
        decided=decided,
        better=("shadow" if estimate > 0 else "production") if decided else None,
    )


def mcnemar(b: int, c: int) -> float:
    """McNemar's exact test (McNemar 1947, Psychometrika 12(2)): the two-sided p-value of
    b discordant pairs of one kind out of b + c under the hypothesis that both models are
    equally accurate, so that each discordant pair is either kind with probability 1/2
    (``scipy.stats.binomtest``). Concordant pairs carry no evidence and do not enter.
    1.0 without discordant pairs. A fixed-horizon test: valid at one look decided in
    advance, not at every look."""
    if not all(isinstance(k, numbers.Integral) for k in (b, c)):
        raise ValueError(f"b and c must be whole counts; got {b!r}, {c!r}.")
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"b and c cannot be negative; got {b}, {c}.")
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)


class Wilcoxon(NamedTuple):
    statistic: float  # the smaller of the positive and negative rank sums
    p_value: float


def wilcoxon(differences: npt.ArrayLike) -> Wilcoxon:
    """The Wilcoxon signed-rank test (Wilcoxon 1945, Biometrics Bulletin 1(6)) of the
    differences d, two-sided, through ``scipy.stats.wilcoxon``.

    It tests whether d is distributed symmetrically about 0, and has power against a shift
    of the *pseudo-median* of d (the median of the averages (d_i + d_j) / 2), NOT of its
    mean: for skewed d the two can even have opposite signs (a shadow slightly better on
    most requests and far worse on a few has a positive pseudo-median and a negative mean
    difference of MAE). The sequence estimates the mean; read the two together.

    ``zero_method="wilcox"``: pairs with d = 0 are dropped before ranking (Wilcoxon's
    own rule). Equal errors say nothing about which model is better, the same reasoning
    by which McNemar ignores concordant pairs; a shadow that changes few answers is then
    tested on those it changed instead of being drowned in ties. (Pratt 1959's rule ranks
    the zeros too; it avoids an oddity of dropping them, that moving a difference away
    from 0 can make the test less significant, at the price of the ties' ranks.)
    ``method="auto"``: scipy's exact distribution for up to 50 nonzero differences without
    ties, else exhaustive permutations up to 13 and the normal approximation (with tie
    correction) beyond.

    Without any nonzero difference (no pairs, or all d = 0) there is nothing to rank: the
    result is statistic 0 and p = 1.0 rather than scipy's NaN and warning."""
    d = np.asarray(differences, dtype=float).ravel()
    if not np.all(np.isfinite(d)):
        raise ValueError("The differences must be finite numbers.")
    if not np.any(d != 0):
        return Wilcoxon(statistic=0.0, p_value=1.0)
    result = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto")
    return Wilcoxon(statistic=float(result.statistic), p_value=float(result.pvalue))


def pairing_gain(moments: PairedMoments) -> float | None:
    """var(d) / (var(x_p) + var(x_s)): the share of the unpaired variance of a difference of
    means that remains after pairing, i.e. about the share of labelled requests the paired
    comparison needs of those two independent samples of the same size would. Below 1
    pairing helps (the models err on the same requests); 1 means independent errors.
    Plain sample variances, no floors. None below two pairs, or when neither model's x
    varies (the ratio is then 0 / 0)."""
    if moments.n < 2:
        return None
    unpaired = _sample_variance(moments.sum_p, moments.sum_p2, moments.n) + _sample_variance(
        moments.sum_s, moments.sum_s2, moments.n
    )
    if unpaired <= 0:
        return None
    return _sample_variance(moments.sum_d, moments.sum_d2, moments.n) / unpaired


def _variance_of_d(
    count: FloatArray,
    sum_d: FloatOrArray,
    sum_d2: FloatOrArray,
    sum_p: FloatOrArray,
    sum_s: FloatOrArray,
    *,
    bernoulli: bool,
) -> FloatArray:
    """The floored plug-in variance of d per pair (see the floors above), over arrays."""
    sums, squares = np.asarray(sum_d, dtype=float), np.asarray(sum_d2, dtype=float)
    if bernoulli:
        pseudo = count + 2 * DISCORDANT_PSEUDO_COUNT
        variance: FloatArray = (squares + 2 * DISCORDANT_PSEUDO_COUNT) / pseudo - np.square(
            sums / pseudo
        )
        return variance
    several = np.maximum(count, 2)  # below 2 the answer is inf; this only avoids 0 / 0
    spread = (squares - sums * sums / several) / (several - 1)
    mean_error = (np.asarray(sum_p, dtype=float) + np.asarray(sum_s, dtype=float)) / (2 * several)
    # Rounding can make the spread of identical values slightly negative: the floor covers it.
    floored = np.maximum(spread, np.square(PAIRED_RELATIVE_SD_FLOOR * mean_error))
    return np.where(count < 2, np.inf, np.maximum(floored, 0.0))


def _sample_variance(total: float, total_sq: float, count: int) -> float:
    return max(0.0, (total_sq - total * total / count) / (count - 1))


def _paired_arrays(
    production_x: npt.ArrayLike, shadow_x: npt.ArrayLike, *, metric: str
) -> tuple[FloatArray, FloatArray]:
    _check_metric(metric)
    x_p = np.asarray(production_x, dtype=float).ravel()
    x_s = np.asarray(shadow_x, dtype=float).ravel()
    if x_p.shape != x_s.shape:
        raise ValueError(
            f"Each request needs both answers scored; got {x_p.size} for production and "
            f"{x_s.size} for the shadow."
        )
    if not (np.all(np.isfinite(x_p)) and np.all(np.isfinite(x_s))):
        raise ValueError("Scores must be finite numbers.")
    if metric == "accuracy" and not np.all(np.isin(x_p, (0, 1)) & np.isin(x_s, (0, 1))):
        raise ValueError("For accuracy, each score must be 1.0 (right) or 0.0 (wrong).")
    if metric == "mae" and (np.any(x_p < 0) or np.any(x_s < 0)):
        raise ValueError("Absolute errors cannot be negative.")
    return x_p, x_s


def _check_consistent(moments: PairedMoments, *, metric: str) -> None:
    """Refuse sums that no pairs of this metric can have (a counter written wrong)."""
    _check_metric(metric)
    m = moments
    if metric == "accuracy":
        # With x in {0, 1}: d = x_s - x_p, so sum_d = c - b, sum_d2 = b + c, x^2 = x, and
        # the pairs both models got right are sum_p - b = sum_s - c.
        both_right = m.sum_p - m.b
        implied = (m.c - m.b, m.b + m.c, m.sum_p, m.sum_s, both_right)
        if (m.sum_d, m.sum_d2, m.sum_p2, m.sum_s2, m.sum_s - m.c) != implied or not (
            0 <= both_right <= m.n - m.b - m.c
        ):
            raise ValueError(f"These are not the sums of right/wrong pairs: {m}.")
    elif m.sum_p < 0 or m.sum_s < 0 or m.sum_d2 < 0 or m.b or m.c:
        raise ValueError(f"These are not the sums of pairs of absolute errors: {m}.")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"The metric must be one of {', '.join(METRICS)}; got {metric!r}.")
