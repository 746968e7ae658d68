"""The statistics of an A/B test, checked against scipy and published values."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest, chi2_contingency, fisher_exact

from apps.endpoints.experiments import stats

# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I:
# the Wilson score interval without continuity correction, to four decimals.
NEWCOMBE = [
    (81, 263, (0.2553, 0.3662)),
    (15, 148, (0.0624, 0.1605)),
    (0, 20, (0.0, 0.1611)),
    (1, 29, (0.0061, 0.1718)),
]


@pytest.mark.parametrize(("correct", "n", "expected"), NEWCOMBE)
def test_the_wilson_interval_matches_the_published_values(
    correct: int, n: int, expected: tuple[float, float]
) -> None:
    low, high = stats.wilson_interval(correct, n)
    assert low == pytest.approx(expected[0], abs=5e-5)
    assert high == pytest.approx(expected[1], abs=5e-5)


@pytest.mark.parametrize(("correct", "n"), [(0, 1), (7, 7), (412, 500), (3, 1000), (50, 51)])
def test_the_wilson_interval_matches_scipy(correct: int, n: int) -> None:
    reference = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert stats.wilson_interval(correct, n) == pytest.approx(
        (reference.low, reference.high), abs=1e-12
    )


def test_the_wilson_interval_refuses_an_empty_sample_instead_of_dividing_by_zero() -> None:
    with pytest.raises(ValueError, match="n = 0"):
        stats.wilson_interval(0, 0)
    with pytest.raises(ValueError, match="0 <= correct <= n"):
        stats.wilson_interval(5, 4)


TABLES = [(412, 500, 389, 500), (80, 100, 90, 100), (1000, 1300, 1050, 1310), (30, 60, 45, 70)]


@pytest.mark.parametrize(("c1", "n1", "c2", "n2"), TABLES)
def test_the_z_test_equals_the_chi_square_test_without_continuity_correction(
    c1: int, n1: int, c2: int, n2: int
) -> None:
    table = [[c1, n1 - c1], [c2, n2 - c2]]
    expected = chi2_contingency(table, correction=False).pvalue
    assert stats.two_proportion_z_test(c1, n1, c2, n2) == pytest.approx(expected, rel=1e-9)


def test_the_z_test_of_identical_perfect_arms_is_one_not_a_division_by_zero() -> None:
    assert stats.two_proportion_z_test(10, 10, 30, 30) == 1.0
    assert stats.two_proportion_z_test(0, 10, 0, 30) == 1.0


@pytest.mark.parametrize(
    ("c1", "n1", "c2", "n2", "expected"),
    [
        (3, 4, 1, 4, 0.4857142857),  # Fisher's lady tasting tea: 34/70
        (1, 10, 9, 10, 202 / 184756),  # (1 + 100 + 100 + 1) / C(20, 10), by hand
    ],
)
def test_fisher_matches_known_values_and_scipy(
    c1: int, n1: int, c2: int, n2: int, expected: float
) -> None:
    p = stats.fisher_exact_test(c1, n1, c2, n2)
    assert p == pytest.approx(expected, rel=1e-4)
    assert p == pytest.approx(fisher_exact([[c1, n1 - c1], [c2, n2 - c2]]).pvalue)


def test_small_counts_use_fisher_and_large_counts_the_z_test() -> None:
    small = stats.compare(3, 4, 1, 4, alpha=0.05)
    assert small.method == "fisher_exact_test"
    assert small.p_value == pytest.approx(34 / 70)
    assert small.difference == pytest.approx(-0.5) and not small.significant
    large = stats.compare(412, 500, 450, 500, alpha=0.05)
    assert large.method == "two_proportion_z_test"
    assert large.difference == pytest.approx(0.076)
    assert large.significant and large.p_value < 0.001


def test_the_small_count_rule_looks_at_expected_counts_not_the_sample_size() -> None:
    # 1000 requests per arm, but only 6 wrong answers in all: expected wrong per arm is 3.
    assert stats.small_counts(997, 1000, 997, 1000)
    assert stats.compare(997, 1000, 997, 1000, alpha=0.05).method == "fisher_exact_test"
    assert not stats.small_counts(990, 1000, 985, 1000)


def test_significance_is_p_below_alpha() -> None:
    p = stats.compare(412, 500, 389, 500, alpha=0.05).p_value
    assert 0.01 < p < 0.1
    assert stats.compare(412, 500, 389, 500, alpha=p + 1e-9).significant
    assert not stats.compare(412, 500, 389, 500, alpha=p).significant


def test_comparing_an_empty_arm_is_an_error_not_a_division_by_zero() -> None:
    with pytest.raises(ValueError, match="at least one observation"):
        stats.compare(0, 0, 5, 10, alpha=0.05)
