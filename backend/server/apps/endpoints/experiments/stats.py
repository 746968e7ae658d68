"""The statistics of an A/B test: pure functions of counts and sums, no Django.

A classifier's arm is a binomial sample: ``correct`` successes out of ``n`` requests with
feedback (Wilson intervals; the two-proportion z-test, or Fisher's exact test for small
counts). A regressor's arm is a sample of absolute errors, summarised by its count, sum and
sum of squares (a t interval for the mean absolute error; Welch's t-test between arms,
which does not assume the two arms' errors have the same spread).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

# Below this expected count in any cell of the 2x2 table the normal approximation of the
# z-test is poor (Cochran's rule), so the comparison uses Fisher's exact test instead.
MIN_EXPECTED_COUNT = 5.0


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a proportion: unlike the Wald interval it stays inside
    [0, 1] and keeps its coverage near 0 % and 100 % accuracy and for small ``n``."""
    _check_counts(correct, n)
    if n == 0:
        raise ValueError("A confidence interval needs at least one observation (n = 0).")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_z_test(correct_1: int, n_1: int, correct_2: int, n_2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (the same as Pearson's
    chi-square test on the 2x2 table without continuity correction)."""
    _check_counts(correct_1, n_1)
    _check_counts(correct_2, n_2)
    if n_1 == 0 or n_2 == 0:
        raise ValueError("Both arms need at least one observation.")
    pooled = (correct_1 + correct_2) / (n_1 + n_2)
    variance = pooled * (1 - pooled) * (1 / n_1 + 1 / n_2)
    if variance == 0:  # both arms all right or all wrong: no evidence of any difference
        return 1.0
    z = (correct_2 / n_2 - correct_1 / n_1) / math.sqrt(variance)
    return min(1.0, 2 * NormalDist().cdf(-abs(z)))


def fisher_exact_test(correct_1: int, n_1: int, correct_2: int, n_2: int) -> float:
    """Two-sided p-value of Fisher's exact test on [[right, wrong] per arm]."""
    # Imported here: scipy is slow to import, and most workers never stop a test.
    from scipy.stats import fisher_exact

    _check_counts(correct_1, n_1)
    _check_counts(correct_2, n_2)
    table = [[correct_1, n_1 - correct_1], [correct_2, n_2 - correct_2]]
    return float(fisher_exact(table, alternative="two-sided").pvalue)


def small_counts(correct_1: int, n_1: int, correct_2: int, n_2: int) -> bool:
    """Whether some expected cell count of the 2x2 table is below ``MIN_EXPECTED_COUNT``."""
    total = n_1 + n_2
    right, wrong = correct_1 + correct_2, total - correct_1 - correct_2
    expected = (n * column / total for n in (n_1, n_2) for column in (right, wrong))
    return any(e < MIN_EXPECTED_COUNT for e in expected)


@dataclass(frozen=True)
class Comparison:
    difference: float  # accuracy of arm 2 minus accuracy of arm 1
    p_value: float  # two-sided
    method: str  # "two_proportion_z_test" or "fisher_exact_test"
    significant: bool  # p_value < alpha


def compare(correct_1: int, n_1: int, correct_2: int, n_2: int, *, alpha: float) -> Comparison:
    """Compare two accuracies: the z-test, or Fisher's exact test when counts are small."""
    if n_1 == 0 or n_2 == 0:
        raise ValueError("Both arms need at least one observation.")
    if small_counts(correct_1, n_1, correct_2, n_2):
        method, p_value = "fisher_exact_test", fisher_exact_test(correct_1, n_1, correct_2, n_2)
    else:
        method, p_value = (
            "two_proportion_z_test",
            two_proportion_z_test(correct_1, n_1, correct_2, n_2),
        )
    return Comparison(
        difference=correct_2 / n_2 - correct_1 / n_1,
        p_value=p_value,
        method=method,
        significant=p_value < alpha,
    )


def _check_counts(correct: int, n: int) -> None:
    if not 0 <= correct <= n:
        raise ValueError(f"Counts must satisfy 0 <= correct <= n; got {correct} of {n}.")


@dataclass(frozen=True)
class ErrorSample:
    """An arm's absolute errors, as sums a database can aggregate."""

    n: int
    total: float  # sum of |prediction - truth|
    squares: float  # sum of |prediction - truth|^2

    @property
    def mean(self) -> float:
        return self.total / self.n

    @property
    def sd(self) -> float:
        """The sample standard deviation (0 for a single error)."""
        if self.n < 2:
            return 0.0
        variance = (self.squares - self.n * self.mean**2) / (self.n - 1)
        return math.sqrt(max(variance, 0.0))  # rounding can make a zero variance negative


def mean_interval(sample: ErrorSample, confidence: float = 0.95) -> tuple[float, float]:
    """The t interval for the mean absolute error (needs two errors or more), clipped at 0."""
    from scipy.stats import t

    if sample.n < 2:
        raise ValueError("A confidence interval of a mean needs at least two observations.")
    half = float(t.ppf(1 - (1 - confidence) / 2, sample.n - 1)) * sample.sd / math.sqrt(sample.n)
    return max(0.0, sample.mean - half), sample.mean + half


def welch_t_test(first: ErrorSample, second: ErrorSample) -> float:
    """Two-sided p-value of Welch's t-test on the two arms' absolute errors."""
    from scipy.stats import ttest_ind_from_stats

    if first.n < 2 or second.n < 2:
        raise ValueError("Welch's t-test needs at least two observations per arm.")
    if first.sd == 0 and second.sd == 0:  # no spread: the means alone decide
        return 1.0 if math.isclose(first.mean, second.mean) else 0.0
    result = ttest_ind_from_stats(
        first.mean, first.sd, first.n, second.mean, second.sd, second.n, equal_var=False
    )
    return float(result.pvalue)


def compare_errors(first: ErrorSample, second: ErrorSample, *, alpha: float) -> Comparison:
    """Compare two mean absolute errors; ``difference`` is arm 2's minus arm 1's (below 0:
    arm 2 errs less)."""
    p_value = welch_t_test(first, second)
    return Comparison(
        difference=second.mean - first.mean,
        p_value=p_value,
        method="welch_t_test",
        significant=p_value < alpha,
    )
