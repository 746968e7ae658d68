"""Confidence sequences for an A/B test: a comparison that may be looked at after every
feedback and still errs with probability at most alpha. Pure functions, no Django.

A fixed-horizon test (``stats.py``) is valid at one look decided in advance; looked at after
every few feedbacks and stopped at the first significant look, it declares a false winner far
more often than alpha (``bench/ab_simulation.py --sequential``). A confidence sequence is a
sequence of intervals that covers the true difference at *all* looks at once with probability
at least 1 - alpha, so stopping when it first excludes 0 keeps the error rate at alpha.

This is the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy and
Ramdas (2023), "Time-uniform central limit theory and asymptotic confidence sequences",
arXiv 2103.06476: the two-sided normal-mixture boundary of Howard, Ramdas, McAuliffe and
Sekhon (2021), "Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of
Statistics 49(2), with a plug-in variance, and the mixture variance Howard et al. give for a
boundary tightest at a chosen sample size. With ``n`` observations in both arms together:

    rho^2      = (2 ln(1/alpha) + ln(1 + 2 ln(1/alpha))) / N
    half-width = sigma * sqrt(2 (n rho^2 + 1) / (n^2 rho^2) * ln(sqrt(n rho^2 + 1) / alpha))
    sigma^2    = n * (s_1^2 / n_1 + s_2^2 / n_2)

where ``N`` is the number of observations the mixture is tuned for (the sequence is
narrowest, relative to the fixed interval, near n = N) and ``sigma / sqrt(n)`` is the usual
standard error of the difference of two means, so unequal traffic splits need nothing more.
The always-valid p-value is the reciprocal of the same mixture martingale,

    p = min(1, sqrt(1 + n rho^2) * exp(-n rho^2 z^2 / (2 (1 + n rho^2)))),  z = estimate / SE,

and its running minimum is below alpha exactly when some look's sequence excluded 0.

Everything is a function of each arm's sufficient statistics (count, sum, sum of squares),
so the same code serves a live report, the stop decision and a simulation of thousands of
tests; ``sequence_bounds`` is vectorised over numpy arrays for the latter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
# Inputs: a number, or an array of them (counts may come as integers).
FloatOrArray = float | npt.NDArray[np.floating[Any]] | npt.NDArray[np.integer[Any]]

DEFAULT_ALPHA = 0.05
# N when the test does not say how much feedback it expects (both arms together). The
# existing fixed-horizon simulation (docs/ab-tests.md) finds a 5-point gap at 80 % accuracy
# reliably only past ~1,600 feedbacks; tuning for 2,000 makes the sequence tight where such
# tests decide, and a test that runs ten times longer pays for it with a sequence only 7 %
# wider than one tuned for its length (the "What N trades" table in docs/ab-tests.md).
DEFAULT_PLANNED = 2000
# The sequence is asymptotic (a central limit theorem): with a handful of observations per
# arm the plug-in variance is too noisy to trust, so no look decides before each arm has
# this many feedbacks.
MIN_COUNT = 30
# Floors under the plug-in variance, so that an arm with no spread so far (all correct, or
# every error alike) cannot make the sequence collapse onto its point estimate:
# - accuracy: p(1 - p) of the Laplace-smoothed accuracy (correct + 1) / (n + 2), i.e. one
#   pseudo success and one pseudo failure per arm, as Agresti and Caffo (2000) add for the
#   difference of two proportions; it is never 0 and moves p(1 - p) by O(1/n);
# - absolute errors: a standard deviation of at least 10 % of the arm's mean absolute error.
#   Absolute errors of a real model vary with the input (a half-normal's sd is 0.76 of its
#   mean, an exponential's 1.0); a spread under a tenth of the mean is far more likely a run
#   of alike errors so far than the truth. An arm whose errors are all 0 has no floor: its
#   side contributes no uncertainty, and the other arm's spread decides.
BERNOULLI_PSEUDO_COUNT = 1.0
RELATIVE_SD_FLOOR = 0.1

METRICS = ("accuracy", "mae")  # accuracy: correct = 1.0, higher is better; mae: lower is better


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of one arm's observations (1.0 / 0.0 for correct / incorrect,
    or absolute errors)."""

    count: int = 0
    total: float = 0.0  # sum of the observations
    total_sq: float = 0.0  # sum of their squares

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"An arm's count cannot be negative; got {self.count}.")
        if not (math.isfinite(self.total) and math.isfinite(self.total_sq)):
            raise ValueError(f"An arm's sums must be finite; got {self.total}, {self.total_sq}.")

    @property
    def mean(self) -> float:
        """The mean observation; NaN for an arm without any."""
        return self.total / self.count if self.count else math.nan

    def variance(self, *, bernoulli: bool) -> float:
        """The per-observation plug-in variance with its floor (see the floors above):
        for Bernoulli observations p(1 - p) of the smoothed proportion (0.25 with no
        observation), otherwise the sample variance (n - 1 in the denominator), infinite
        below two observations."""
        return float(_variance(self.total, self.total_sq, self.count, bernoulli=bernoulli))

    def add(self, value: float) -> Moments:
        """The statistics with one more observation."""
        return Moments(self.count + 1, self.total + value, self.total_sq + value * value)

    def replace(self, old: float, new: float) -> Moments:
        """The statistics after a revised feedback turns the observation ``old`` into
        ``new`` (the count is unchanged)."""
        if self.count < 1:
            raise ValueError("An arm without observations has none to replace.")
        return Moments(self.count, self.total - old + new, self.total_sq - old * old + new * new)


def rho_squared(alpha: float, planned: int) -> float:
    """The normal mixture's variance that makes the sequence (about) narrowest at
    ``planned`` observations (Howard et al. 2021; an approximation of the optimum,
    which a test checks against scipy's)."""
    _check_alpha(alpha)
    if planned < 1:
        raise ValueError(f"The planned number of observations must be at least 1; got {planned}.")
    log_inverse = 2 * math.log(1 / alpha)
    return (log_inverse + math.log(1 + log_inverse)) / planned


def half_width(
    sigma: FloatOrArray, n: FloatOrArray, rho2: float, alpha: float
) -> float | FloatArray:
    """Half the width of the confidence sequence after ``n`` > 0 observations, whose
    per-observation standard deviation is ``sigma`` (Waudby-Smith et al. 2023).
    Infinite ``sigma`` gives an infinite half-width."""
    count = np.asarray(n, dtype=float)
    if np.any(count <= 0) or rho2 <= 0:
        raise ValueError("A confidence sequence needs n > 0 observations and rho^2 > 0.")
    n_rho2 = count * rho2
    radius = np.asarray(sigma, dtype=float) * np.sqrt(
        2 * (n_rho2 + 1) / (count * n_rho2) * np.log(np.sqrt(n_rho2 + 1) / alpha)
    )
    return _like_input(radius, sigma, n)


def always_valid_p(z: FloatOrArray, n: FloatOrArray, rho2: float) -> float | FloatArray:
    """The p-value of one look, the reciprocal of the normal-mixture martingale at ``n``
    observations with standardised estimate ``z``; the minimum over the looks so far is the
    always-valid p-value."""
    n_rho2 = np.asarray(n, dtype=float) * rho2
    z2 = np.square(np.asarray(z, dtype=float))
    p = np.minimum(1.0, np.sqrt(1 + n_rho2) * np.exp(-n_rho2 * z2 / (2 * (1 + n_rho2))))
    return _like_input(p, z, n)


class SequenceBounds(NamedTuple):
    """One look at many tests at once (arrays of the same shape)."""

    estimate: FloatArray  # arm 2's mean minus arm 1's; NaN where an arm is empty
    lower: FloatArray
    upper: FloatArray
    p_value: FloatArray  # this look's; 1 until both arms have MIN_COUNT
    decided: npt.NDArray[np.bool_]  # both arms have MIN_COUNT and the sequence excludes 0


def sequence_bounds(
    sum1: FloatOrArray,
    sumsq1: FloatOrArray,
    n1: FloatOrArray,
    sum2: FloatOrArray,
    sumsq2: FloatOrArray,
    n2: FloatOrArray,
    *,
    bernoulli: bool,
    alpha: float,
    rho2: float,
) -> SequenceBounds:
    """The confidence sequence for the difference of the arms' means at one look, for
    arrays of tests: what ``compare`` reports and what the simulation in bench/ runs.

    An empty arm gives the whole line (for accuracies, [-1, 1]). Accuracy bounds are clipped
    to [-1, 1], which can only make them truer."""
    count_1, count_2 = np.asarray(n1, dtype=float), np.asarray(n2, dtype=float)
    seen_1, seen_2 = np.maximum(count_1, 1), np.maximum(count_2, 1)  # no division by 0
    empty = (count_1 < 1) | (count_2 < 1)
    estimate = np.asarray(sum2, dtype=float) / seen_2 - np.asarray(sum1, dtype=float) / seen_1
    standard_error = np.sqrt(
        _variance(sum1, sumsq1, count_1, bernoulli=bernoulli) / seen_1
        + _variance(sum2, sumsq2, count_2, bernoulli=bernoulli) / seen_2
    )
    n = seen_1 + seen_2
    radius = np.asarray(half_width(standard_error * np.sqrt(n), n, rho2, alpha))
    lower = np.where(empty, -np.inf, estimate - radius)
    upper = np.where(empty, np.inf, estimate + radius)
    if bernoulli:
        lower, upper = np.maximum(lower, -1.0), np.minimum(upper, 1.0)
    # A zero standard error happens only when both arms' errors are all 0: no difference.
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(standard_error > 0, estimate / standard_error, 0.0)
    ready = (count_1 >= MIN_COUNT) & (count_2 >= MIN_COUNT)
    p_value = np.where(ready, always_valid_p(z, n, rho2), 1.0)
    return SequenceBounds(
        estimate=np.where(empty, np.nan, estimate),
        lower=lower,
        upper=upper,
        p_value=p_value,
        decided=ready & ((lower > 0) | (upper < 0)),
    )


@dataclass(frozen=True)
class ArmSequence:
    """One arm's own confidence sequence for its metric (for the report): the same
    boundary with sigma = the arm's standard deviation, n = its count and rho^2 tuned for
    half the planned feedback; accuracy clipped to [0, 1], a mean absolute error at 0."""

    mean: float  # NaN for an arm without observations
    lower: float
    upper: float


@dataclass(frozen=True)
class Comparison:
    estimate: float  # arm 2's mean minus arm 1's (NaN while an arm is empty)
    lower: float
    upper: float  # the confidence sequence for the difference at this look
    p_value: float  # this look's always-valid p; the caller keeps the running minimum
    n: int  # observations in both arms together
    decided: bool  # both arms have MIN_COUNT observations and the sequence excludes 0
    better: int | None  # 1 or 2 when decided: higher accuracy, or LOWER mean absolute error
    arms: tuple[ArmSequence, ArmSequence]
    width_ratio_at_planned: float  # the sequence's width over the fixed interval's at N


def compare(
    arm_1: Moments,
    arm_2: Moments,
    *,
    metric: str,
    alpha: float = DEFAULT_ALPHA,
    planned: int | None = None,
) -> Comparison:
    """The confidence sequence for arm 2's metric minus arm 1's after the observations so
    far; ``metric`` is "accuracy" (observations 1.0 / 0.0) or "mae" (absolute errors) and
    ``planned`` the feedback expected in both arms together (None: ``DEFAULT_PLANNED``)."""
    if metric not in METRICS:
        raise ValueError(f"The metric must be one of {', '.join(METRICS)}; got {metric!r}.")
    bernoulli = metric == "accuracy"
    for arm in (arm_1, arm_2):
        if bernoulli and not 0 <= arm.total <= arm.count:
            raise ValueError(f"Correct answers must be between 0 and the count; got {arm}.")
        if not bernoulli and arm.total < 0:
            raise ValueError(f"Absolute errors cannot sum below 0; got {arm}.")
    planned = DEFAULT_PLANNED if planned is None else planned
    rho2 = rho_squared(alpha, planned)
    look = sequence_bounds(
        arm_1.total, arm_1.total_sq, arm_1.count, arm_2.total, arm_2.total_sq, arm_2.count,
        bernoulli=bernoulli, alpha=alpha, rho2=rho2,
    )  # fmt: skip
    estimate, decided = float(look.estimate), bool(look.decided)
    better = None
    if decided:
        better = 2 if (estimate > 0) == bernoulli else 1
    arm_rho2 = rho_squared(alpha, max(1, planned // 2))
    return Comparison(
        estimate=estimate,
        lower=float(look.lower),
        upper=float(look.upper),
        p_value=float(look.p_value),
        n=arm_1.count + arm_2.count,
        decided=decided,
        better=better,
        arms=(
            _arm_sequence(arm_1, bernoulli=bernoulli, alpha=alpha, rho2=arm_rho2),
            _arm_sequence(arm_2, bernoulli=bernoulli, alpha=alpha, rho2=arm_rho2),
        ),
        width_ratio_at_planned=width_ratio(alpha),
    )


def width_ratio(alpha: float) -> float:
    """How much wider the sequence is at n = N than the fixed-horizon z interval at N
    (with the same sigma): a function of alpha alone, since n rho^2 = N rho^2 is."""
    rho2 = rho_squared(alpha, 1)  # N = 1: the ratio does not depend on N
    fixed = NormalDist().inv_cdf(1 - alpha / 2)
    return float(half_width(1.0, 1.0, rho2, alpha)) / fixed


def _arm_sequence(arm: Moments, *, bernoulli: bool, alpha: float, rho2: float) -> ArmSequence:
    high = 1.0 if bernoulli else math.inf
    if arm.count == 0:
        return ArmSequence(mean=math.nan, lower=0.0, upper=high)
    radius = float(half_width(math.sqrt(arm.variance(bernoulli=bernoulli)), arm.count, rho2, alpha))
    return ArmSequence(
        mean=arm.mean, lower=max(0.0, arm.mean - radius), upper=min(high, arm.mean + radius)
    )


def _variance(
    total: FloatOrArray, total_sq: FloatOrArray, count: FloatOrArray, *, bernoulli: bool
) -> FloatArray:
    """The floored plug-in variance of ``Moments.variance``, over arrays."""
    sums, counts = np.asarray(total, dtype=float), np.asarray(count, dtype=float)
    if bernoulli:
        smoothed = (sums + BERNOULLI_PSEUDO_COUNT) / (counts + 2 * BERNOULLI_PSEUDO_COUNT)
        return smoothed * (1 - smoothed)
    several = np.maximum(counts, 2)  # below 2 the answer is inf; this only avoids 0 / 0
    mean = sums / several
    spread = (np.asarray(total_sq, dtype=float) - sums * mean) / (several - 1)
    # Rounding can make the spread of identical values slightly negative: the floor covers it.
    floored = np.maximum(spread, np.square(RELATIVE_SD_FLOOR * mean))
    return np.where(counts < 2, np.inf, floored)


def _like_input(result: FloatArray, *inputs: FloatOrArray) -> float | FloatArray:
    """A float for scalar inputs, an array otherwise."""
    if all(np.ndim(x) == 0 for x in inputs):
        return float(result)
    return result


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be strictly between 0 and 1; got {alpha}.")
