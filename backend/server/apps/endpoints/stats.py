"""The statistics of an A/B test: pure functions of counts, no Django.

Each arm is a binomial sample: ``correct`` successes out of ``n`` requests with feedback.
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
