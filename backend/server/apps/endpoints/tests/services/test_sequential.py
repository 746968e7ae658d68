"""The confidence sequence of an A/B test, checked against hand computation, scipy and a
brute-force simulation of its coverage under peeking."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.stats import beta, norm

from apps.endpoints.experiments import sequential
from apps.endpoints.experiments.sequential import FloatArray, Moments

# The log terms of alpha = 0.05, worked out once here by hand (and to 40 digits with Python's
# decimal module, which gave the literals below): 2 ln(1/alpha) = 5.99146..., so
# rho^2 N = 5.99146 + ln(6.99146) = 7.93615...
LOG_TERM_005 = 2 * math.log(20) + math.log(1 + 2 * math.log(20))


def test_rho_squared_is_the_mixture_variance_worked_out_by_hand() -> None:
    assert LOG_TERM_005 == pytest.approx(7.9361546017375653, rel=1e-15)
    assert sequential.rho_squared(0.05, 100) == pytest.approx(0.079361546017375653, rel=1e-14)
    assert sequential.rho_squared(0.05, 4000) == pytest.approx(LOG_TERM_005 / 4000, rel=1e-14)
    log_term_001 = 2 * math.log(100) + math.log(1 + 2 * math.log(100))
    assert sequential.rho_squared(0.01, 1) == pytest.approx(log_term_001, rel=1e-14)


def test_the_half_width_is_the_formula_worked_out_by_hand() -> None:
    # alpha = 0.05, tuned for N = 100, after n = 50 observations with sigma = 0.4:
    rho2 = LOG_TERM_005 / 100  # 0.0793615...
    n_rho2 = 50 * rho2  # 3.9680773...
    factor = 2 * (n_rho2 + 1) / (50 * 50 * rho2)  # 9.9361546 / 198.403865 = 0.0500804...
    log = math.log(math.sqrt(n_rho2 + 1) / 0.05)  # ln(2.2289... / 0.05) = 3.79726...
    by_hand = 0.4 * math.sqrt(factor * log)
    assert by_hand == pytest.approx(0.17443298785476357, rel=1e-13)  # decimal, 40 digits
    assert sequential.half_width(0.4, 50, rho2, 0.05) == pytest.approx(by_hand, rel=1e-13)


def test_the_half_width_takes_arrays_and_gives_a_float_for_floats() -> None:
    rho2 = sequential.rho_squared(0.05, 100)
    widths = sequential.half_width(np.array([0.4, 0.8]), np.array([50.0, 50.0]), rho2, 0.05)
    assert isinstance(widths, np.ndarray)
    assert widths == pytest.approx([0.17443298785476357, 2 * 0.17443298785476357], rel=1e-13)
    assert isinstance(sequential.half_width(0.4, 50, rho2, 0.05), float)


def test_the_half_width_shrinks_like_the_square_root_of_log_n_over_n() -> None:
    # For large n, half-width^2 = sigma^2 (ln(n rho^2) + 2 ln(1/alpha)) / n (1 + o(1)):
    # slower than a fixed interval's 1/n by a log factor, which is what buys validity at
    # every n (the law of the iterated logarithm says no boundary can shrink much faster).
    rho2 = sequential.rho_squared(0.05, 2000)
    ns = np.array([1e6, 1e8, 1e10, 1e12, 1e14])
    widths = np.asarray(sequential.half_width(1.0, ns, rho2, 0.05))
    ratios = widths / np.sqrt(np.log(ns) / ns)
    assert np.all(np.diff(widths) < 0)
    assert np.all(np.diff(widths * np.sqrt(ns)) > 0), "wider than any fixed z interval, in time"
    assert np.all(np.diff(np.abs(ratios - 1)) < 0), "the ratio converges"
    assert ratios[-1] == pytest.approx(1, abs=0.02)


def test_the_mixture_is_tuned_so_that_the_sequence_is_narrowest_about_n_equals_n() -> None:
    # Howard et al.'s rho^2 is an approximation of the minimiser; check it against scipy's.
    planned, alpha = 4000, 0.05
    optimum = minimize_scalar(
        lambda log_rho2: float(sequential.half_width(1.0, planned, math.exp(log_rho2), alpha)),
        bounds=(-15, 0),
        method="bounded",
    )
    chosen = sequential.half_width(1.0, planned, sequential.rho_squared(alpha, planned), alpha)
    assert chosen == pytest.approx(optimum.fun, rel=0.005)


def test_the_sequence_is_about_1_55_times_the_fixed_interval_at_n() -> None:
    by_hand = math.sqrt(
        2 * (LOG_TERM_005 + 1) / LOG_TERM_005 * math.log(math.sqrt(LOG_TERM_005 + 1) / 0.05)
    ) / norm.ppf(0.975)
    assert by_hand == pytest.approx(1.5486, abs=5e-5)
    assert sequential.width_ratio(0.05) == pytest.approx(by_hand, rel=1e-12)
    for planned in (100, 4000):  # the ratio depends on alpha only
        at_planned = sequential.compare(
            Moments(60, 40, 40), Moments(60, 45, 45), metric="accuracy", planned=planned
        )
        assert at_planned.width_ratio_at_planned == pytest.approx(by_hand, rel=1e-12)


def test_the_p_value_is_the_formula_worked_out_by_hand() -> None:
    rho2 = LOG_TERM_005 / 100
    n_rho2 = 50 * rho2
    by_hand = math.sqrt(1 + n_rho2) * math.exp(-n_rho2 * 2.5**2 / (2 * (1 + n_rho2)))
    assert by_hand == pytest.approx(0.18369700873700804, rel=1e-13)  # decimal, 40 digits
    assert sequential.always_valid_p(2.5, 50, rho2) == pytest.approx(by_hand, rel=1e-13)
    assert sequential.always_valid_p(-2.5, 50, rho2) == pytest.approx(by_hand, rel=1e-13)


def test_the_p_value_is_at_most_1_and_falls_as_z_grows() -> None:
    rho2 = sequential.rho_squared(0.05, 2000)
    zs = np.linspace(0, 8, 81)
    p = np.asarray(sequential.always_valid_p(zs, 500, rho2))
    assert p[0] == 1.0
    assert np.all(p <= 1)
    assert np.all(np.diff(p) <= 0)
    assert np.all(np.diff(p[p < 1]) < 0)
    assert p[-1] < 1e-9


def test_a_look_decides_exactly_when_its_p_value_is_below_alpha() -> None:
    # The sequence and the p-value are the same mixture martingale read two ways.
    rng = np.random.default_rng(7)
    n1, n2 = rng.integers(30, 3000, 5000), rng.integers(30, 3000, 5000)
    c1, c2 = rng.binomial(n1, 0.8), rng.binomial(n2, rng.uniform(0.75, 0.9, 5000))
    look = sequential.sequence_bounds(
        c1, c1, n1, c2, c2, n2, bernoulli=True, alpha=0.05, rho2=sequential.rho_squared(0.05, 2000)
    )
    assert 0.05 < look.decided.mean() < 0.95, "both kinds of look are tested"
    assert np.array_equal(look.decided, look.p_value <= 0.05)


# Moments


def test_moments_add_and_replace_keep_the_sums() -> None:
    arm = Moments().add(1.0).add(0.0).add(1.0)
    assert arm == Moments(count=3, total=2.0, total_sq=2.0)
    assert arm.mean == pytest.approx(2 / 3)
    errors = Moments().add(2.0).add(3.5)
    assert errors == Moments(2, 5.5, 16.25)
    assert errors.replace(3.5, 1.0) == Moments(2, 3.0, 5.0), "a revised feedback moves one"
    assert arm.replace(0.0, 1.0) == Moments(3, 3.0, 3.0)


def test_moments_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        Moments(count=-1)
    with pytest.raises(ValueError, match="finite"):
        Moments(count=1, total=math.nan)
    with pytest.raises(ValueError, match="none to replace"):
        Moments().replace(1.0, 0.0)


def test_an_empty_arm_has_no_mean() -> None:
    assert math.isnan(Moments().mean)


def test_the_variance_of_errors_is_the_sample_variance() -> None:
    errors = [0.3, 2.5, 1.0, 7.25, 0.05, 3.0]
    arm = Moments()
    for error in errors:
        arm = arm.add(error)
    assert arm.variance(bernoulli=False) == pytest.approx(statistics.variance(errors), rel=1e-12)


def test_a_single_error_has_an_infinite_variance_not_zero() -> None:
    assert Moments().add(3.0).variance(bernoulli=False) == math.inf
    assert Moments().variance(bernoulli=False) == math.inf


def test_alike_errors_get_a_standard_deviation_of_a_tenth_of_their_mean() -> None:
    alike = Moments(30, 30 * 2.0, 30 * 4.0)  # thirty errors of 2.0: no spread at all
    assert alike.variance(bernoulli=False) == pytest.approx(0.2**2, rel=1e-12)
    assert Moments(30, 0.0, 0.0).variance(bernoulli=False) == 0.0, "a perfect arm has no floor"


def test_accuracy_variance_is_that_of_the_laplace_smoothed_accuracy() -> None:
    perfect = Moments(30, 30.0, 30.0)  # all correct so far: the plug-in p(1 - p) is 0
    assert perfect.variance(bernoulli=True) == pytest.approx(31 / 32 * 1 / 32, rel=1e-12)
    assert Moments(100, 80.0, 80.0).variance(bernoulli=True) == pytest.approx(
        81 / 102 * 21 / 102, rel=1e-12
    )
    assert Moments().variance(bernoulli=True) == 0.25


# compare


def accuracy(correct: int, n: int) -> Moments:
    return Moments(n, float(correct), float(correct))


def errors(n: int, mean: float, sd: float) -> Moments:
    """An arm of n absolute errors with this mean and sample standard deviation."""
    return Moments(n, n * mean, (n - 1) * sd * sd + n * mean * mean)


def test_a_clearly_more_accurate_challenger_is_decided_better() -> None:
    result = sequential.compare(accuracy(800, 1000), accuracy(900, 1000), metric="accuracy")
    assert result.decided and result.better == 2
    assert result.estimate == pytest.approx(0.1)
    assert 0 < result.lower < result.estimate < result.upper
    assert result.p_value < 0.05
    assert result.n == 2000
    swapped = sequential.compare(accuracy(900, 1000), accuracy(800, 1000), metric="accuracy")
    assert swapped.decided and swapped.better == 1
    assert swapped.upper < 0


def test_for_errors_the_lower_mean_absolute_error_is_better() -> None:
    result = sequential.compare(errors(1000, 10.0, 10.0), errors(1000, 7.0, 7.0), metric="mae")
    assert result.estimate == pytest.approx(-3.0)
    assert result.upper < 0
    assert result.decided and result.better == 2
    worse = sequential.compare(errors(1000, 7.0, 7.0), errors(1000, 10.0, 10.0), metric="mae")
    assert worse.decided and worse.better == 1


def test_a_close_race_is_not_decided() -> None:
    result = sequential.compare(accuracy(800, 1000), accuracy(810, 1000), metric="accuracy")
    assert not result.decided and result.better is None
    assert result.lower < 0 < result.upper
    assert result.p_value > 0.05


def test_nothing_is_decided_before_both_arms_have_the_minimum_count() -> None:
    below = sequential.MIN_COUNT - 1
    result = sequential.compare(accuracy(0, below), accuracy(below, below), metric="accuracy")
    assert result.lower > 0, "the sequence excludes 0 already..."
    assert not result.decided and result.better is None, "...but too few to trust it"
    assert result.p_value == 1.0, "so that the running minimum of p only counts real looks"
    at = sequential.MIN_COUNT
    assert sequential.compare(accuracy(0, at), accuracy(at, at), metric="accuracy").decided


def test_unequal_splits_use_the_standard_error_of_the_difference() -> None:
    # 40 feedbacks in arm 1 (30 correct), 160 in arm 2 (150 correct), tuned for N = 2000.
    # sigma^2 = 200 (p1 (1 - p1) / 40 + p2 (1 - p2) / 160), p1 = 31/42 and p2 = 151/162 the
    # smoothed accuracies: 1.04566..., and the half-width follows (to 40 digits: 0.27874...).
    p1, p2 = 31 / 42, 151 / 162
    sigma2 = 200 * (p1 * (1 - p1) / 40 + p2 * (1 - p2) / 160)
    assert sigma2 == pytest.approx(1.0456666091219295, rel=1e-13)
    rho2 = LOG_TERM_005 / 2000
    radius = math.sqrt(
        sigma2 * 2 * (200 * rho2 + 1) / (200**2 * rho2) * math.log(math.sqrt(200 * rho2 + 1) / 0.05)
    )
    assert radius == pytest.approx(0.27874825634756440, rel=1e-13)
    result = sequential.compare(accuracy(30, 40), accuracy(150, 160), metric="accuracy")
    assert result.estimate == pytest.approx(150 / 160 - 30 / 40, rel=1e-13)
    assert result.upper - result.estimate == pytest.approx(radius, rel=1e-12)
    assert result.estimate - result.lower == pytest.approx(radius, rel=1e-12)


def test_unequal_splits_of_errors_use_each_arms_own_sample_variance() -> None:
    first, second = [1.0, 4.0, 2.5, 0.5, 6.0] * 8, [3.0, 0.25, 1.5] * 30
    arm_1, arm_2 = Moments(), Moments()
    for error in first:
        arm_1 = arm_1.add(error)
    for error in second:
        arm_2 = arm_2.add(error)
    n = len(first) + len(second)
    standard_error = math.sqrt(
        statistics.variance(first) / len(first) + statistics.variance(second) / len(second)
    )
    rho2 = sequential.rho_squared(0.05, 500)
    radius = float(sequential.half_width(standard_error * math.sqrt(n), n, rho2, 0.05))
    result = sequential.compare(arm_1, arm_2, metric="mae", planned=500)
    assert result.estimate == pytest.approx(statistics.mean(second) - statistics.mean(first))
    assert result.upper - result.estimate == pytest.approx(radius, rel=1e-12)
    z = result.estimate / standard_error
    assert result.p_value == pytest.approx(sequential.always_valid_p(z, n, rho2), rel=1e-12)


def test_each_arm_gets_its_own_sequence_inside_the_metrics_range() -> None:
    result = sequential.compare(accuracy(30, 30), accuracy(20, 40), metric="accuracy")
    perfect, half = result.arms
    assert perfect.mean == 1.0 and perfect.upper == 1.0 and perfect.lower < 1.0
    rho2 = sequential.rho_squared(0.05, sequential.DEFAULT_PLANNED // 2)
    radius = float(sequential.half_width(math.sqrt(0.25), 40, rho2, 0.05))  # (20+1)/(40+2)
    assert (half.lower, half.upper) == pytest.approx((0.5 - radius, 0.5 + radius), rel=1e-12)
    small = sequential.compare(errors(40, 0.1, 1.0), errors(40, 0.2, 1.0), metric="mae")
    assert small.arms[0].lower == 0.0, "a mean absolute error is never below 0"


def test_an_empty_arm_gives_the_whole_range_and_no_decision() -> None:
    result = sequential.compare(Moments(), accuracy(100, 100), metric="accuracy")
    assert math.isnan(result.estimate)
    assert (result.lower, result.upper) == (-1.0, 1.0)
    assert not result.decided and result.p_value == 1.0
    assert math.isnan(result.arms[0].mean)
    assert (result.arms[0].lower, result.arms[0].upper) == (0.0, 1.0)
    mae = sequential.compare(errors(50, 1.0, 1.0), Moments(1, 2.0, 4.0), metric="mae")
    assert (mae.lower, mae.upper) == (-math.inf, math.inf), "one error has no spread yet"
    assert not mae.decided


def test_perfect_regressors_in_both_arms_are_not_different() -> None:
    result = sequential.compare(Moments(50, 0.0, 0.0), Moments(50, 0.0, 0.0), metric="mae")
    assert (result.estimate, result.lower, result.upper) == (0.0, 0.0, 0.0)
    assert not result.decided and result.p_value == 1.0


def test_planned_feedback_moves_where_the_sequence_is_tight() -> None:
    arm_1, arm_2 = accuracy(400, 500), accuracy(420, 500)
    at_1000 = sequential.compare(arm_1, arm_2, metric="accuracy", planned=1000)
    at_100000 = sequential.compare(arm_1, arm_2, metric="accuracy", planned=100_000)
    assert at_1000.upper - at_1000.lower < at_100000.upper - at_100000.lower


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"metric": "f1"}, "metric must be one of accuracy, mae"),
        ({"metric": "accuracy", "alpha": 0.0}, "alpha must be strictly between 0 and 1"),
        ({"metric": "accuracy", "alpha": 1.0}, "alpha must be strictly between 0 and 1"),
        ({"metric": "accuracy", "planned": 0}, "planned number of observations"),
    ],
)
def test_compare_refuses_nonsense_options(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sequential.compare(accuracy(40, 50), accuracy(45, 50), **arguments)  # type: ignore[arg-type]


def test_compare_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError, match="between 0 and the count"):
        sequential.compare(accuracy(40, 50), Moments(10, 11.0, 11.0), metric="accuracy")
    with pytest.raises(ValueError, match="cannot sum below 0"):
        sequential.compare(errors(40, 1.0, 1.0), Moments(10, -1.0, 1.0), metric="mae")


# Coverage under peeking, by brute force: many seeded streams of feedback, a look after every
# 20 feedbacks per arm up to 2,000 per arm (100 looks), as bench/ab_simulation.py
# --sequential does with 10,000 streams. This is the fast version: 2,000 streams.

STREAMS, LOOKS, STEP = 2000, 100, 20
Draw = Callable[[np.random.Generator, tuple[int, ...]], FloatArray]


def looks(
    draw_1: Draw, draw_2: Draw, seed: int, step_1: int = STEP, step_2: int = STEP
) -> tuple[FloatArray, ...]:
    """Cumulative count, sum and sum of squares of each arm at each look, (streams, looks)."""
    rng = np.random.default_rng(seed)
    sums = []
    for draw, step in ((draw_1, step_1), (draw_2, step_2)):
        values = draw(rng, (STREAMS, LOOKS, step))
        count = np.broadcast_to(step * np.arange(1, LOOKS + 1), (STREAMS, LOOKS))
        sums += [count, values.sum(2).cumsum(1), np.square(values).sum(2).cumsum(1)]
    return tuple(sums)


def bernoulli(p: float) -> Draw:
    return lambda rng, shape: (rng.random(shape) < p).astype(float)


def lognormal(scale: float) -> Draw:
    # Skewed absolute errors: lognormal with log-sd 1 (skewness 6.2), mean scale * e^0.5.
    return lambda rng, shape: scale * rng.lognormal(0.0, 1.0, shape)


def upper_99(errors: int, trials: int) -> float:
    """The one-sided upper 99 % Clopper-Pearson bound of a binomial proportion."""
    return 1.0 if errors == trials else float(beta.ppf(0.99, errors + 1, trials - errors))


def ever_wrong(
    draw_1: Draw, draw_2: Draw, truth: float, *, bernoulli: bool, seed: int, split: int = 1
) -> tuple[float, float]:
    """The fraction of streams whose sequence ever excluded the true difference, and the
    fraction whose fixed-horizon z-test was ever significant at 0.05 (after MIN_COUNT)."""
    n1, s1, q1, n2, s2, q2 = looks(draw_1, draw_2, seed, STEP, STEP * split)
    rho2 = sequential.rho_squared(0.05, LOOKS * STEP * (1 + split))
    look = sequential.sequence_bounds(
        s1, q1, n1, s2, q2, n2, bernoulli=bernoulli, alpha=0.05, rho2=rho2
    )
    ready = (n1 >= sequential.MIN_COUNT) & (n2 >= sequential.MIN_COUNT)
    missed = ready & ((look.lower > truth) | (look.upper < truth))
    # The naive test, written out here on its own: the z statistic with each arm's plug-in
    # variance (unpooled), compared with 1.96 at every look.
    var_1 = q1 / n1 - np.square(s1 / n1)
    var_2 = q2 / n2 - np.square(s2 / n2)
    z = (s2 / n2 - s1 / n1 - truth) / np.sqrt(var_1 / n1 + var_2 / n2)
    fixed = ready & (np.abs(z) > norm.ppf(0.975))
    return float(missed.any(1).mean()), float(fixed.any(1).mean())


@pytest.mark.parametrize(
    ("name", "draw", "is_bernoulli"),
    [("accuracy 0.8", bernoulli(0.8), True), ("lognormal errors", lognormal(1.0), False)],
    ids=["accuracy", "lognormal-errors"],
)
def test_with_equal_arms_a_false_winner_is_declared_at_most_alpha_of_the_time(
    name: str, draw: Draw, is_bernoulli: bool
) -> None:
    rate, fixed_rate = ever_wrong(draw, draw, 0.0, bernoulli=is_bernoulli, seed=2026)
    bound = upper_99(round(rate * STREAMS), STREAMS)
    assert bound <= 0.05, f"{name}: false winners in {rate:.3f} of streams (bound {bound:.3f})"
    assert fixed_rate > 0.2, f"{name}: the naive test under peeking errs far more ({fixed_rate})"


def test_the_sequence_covers_a_real_difference_with_an_unequal_split() -> None:
    # Arm 2 gets three feedbacks for each of arm 1's; its accuracy is 5 points higher.
    rate, fixed_rate = ever_wrong(
        bernoulli(0.80), bernoulli(0.85), 0.05, bernoulli=True, seed=2027, split=3
    )
    assert upper_99(round(rate * STREAMS), STREAMS) <= 0.05, f"missed in {rate:.3f} of streams"
    assert fixed_rate > 0.2


def test_the_sequence_covers_a_real_difference_of_skewed_errors() -> None:
    rate, _ = ever_wrong(
        lognormal(1.0), lognormal(0.9), -0.1 * math.exp(0.5), bernoulli=False, seed=2028
    )
    assert upper_99(round(rate * STREAMS), STREAMS) <= 0.05, f"missed in {rate:.3f} of streams"
