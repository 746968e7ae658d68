"""The paired statistics of a shadow against production, checked against hand computation,
brute force, scipy and numpy, on real classifiers' answers, and by a seeded simulation of
the sequence's error rate under peeking."""

from __future__ import annotations

import math
import statistics
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import beta, binom, chi2, norm
from scipy.stats import wilcoxon as scipy_wilcoxon
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from apps.endpoints.experiments import paired, sequential
from apps.endpoints.experiments.paired import PairedMoments
from apps.endpoints.experiments.sequential import MIN_COUNT, FloatArray

# d, the sign of the comparison


def test_d_is_positive_when_the_shadow_did_better() -> None:
    right = paired.differences([1, 1, 0, 0], [1, 0, 1, 0], metric="accuracy")
    assert right.tolist() == [0.0, -1.0, 1.0, 0.0]
    errors = paired.differences([3.0, 1.0], [1.0, 2.5], metric="mae")  # |e_p| - |e_s|
    assert errors.tolist() == [2.0, -1.5]


def test_the_metric_must_be_one_we_know() -> None:
    with pytest.raises(ValueError, match="metric must be one of accuracy, mae"):
        paired.differences([1], [1], metric="f1")
    with pytest.raises(ValueError, match="metric must be one of accuracy, mae"):
        paired.paired_sequence(PairedMoments(), metric="rmse")


# PairedMoments


def test_moments_from_arrays_are_numpys_sums_and_counts() -> None:
    rng = np.random.default_rng(1)
    x_p, x_s = rng.random(500) < 0.8, rng.random(500) < 0.75
    m = PairedMoments.of(x_p, x_s, metric="accuracy")
    d = x_s.astype(float) - x_p.astype(float)
    assert m.n == 500
    assert (m.sum_d, m.sum_d2) == (d.sum(), np.square(d).sum())
    assert (m.sum_p, m.sum_p2, m.sum_s, m.sum_s2) == (x_p.sum(), x_p.sum(), x_s.sum(), x_s.sum())
    assert m.b == np.sum(x_p & ~x_s) and m.c == np.sum(~x_p & x_s)
    assert m.mean_d == pytest.approx(d.mean(), rel=1e-14)

    e_p, e_s = rng.lognormal(0, 1, 300), rng.lognormal(0, 1, 300)
    r = PairedMoments.of(e_p, e_s, metric="mae")
    for total, square, values in (
        (r.sum_d, r.sum_d2, e_p - e_s),
        (r.sum_p, r.sum_p2, e_p),
        (r.sum_s, r.sum_s2, e_s),
    ):
        variance = (square - total * total / r.n) / (r.n - 1)
        assert variance == pytest.approx(np.var(values, ddof=1), rel=1e-10)
    assert (r.b, r.c) == (0, 0), "discordance is a classifier's notion"


def test_moments_add_up_pair_by_pair_and_take_a_revised_pair_out_again() -> None:
    x_p, x_s = [1, 0, 1, 1, 0], [1, 1, 0, 1, 0]
    one_by_one = PairedMoments()
    for p, s in zip(x_p, x_s, strict=True):
        one_by_one = one_by_one.add(p, s, metric="accuracy")
    assert one_by_one == PairedMoments.of(x_p, x_s, metric="accuracy")
    halves = PairedMoments.of(x_p[:2], x_s[:2], metric="accuracy") + PairedMoments.of(
        x_p[2:], x_s[2:], metric="accuracy"
    )
    assert halves == one_by_one
    # The third request's feedback is revised: production was wrong after all, the shadow right.
    old = PairedMoments.of([1], [0], metric="accuracy")
    new = PairedMoments.of([0], [1], metric="accuracy")
    assert one_by_one - old + new == PairedMoments.of(
        [1, 0, 0, 1, 0], [1, 1, 1, 1, 0], metric="accuracy"
    )


def test_moments_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        PairedMoments(n=-1)
    with pytest.raises(ValueError, match="At most n pairs"):
        PairedMoments(n=2, b=2, c=1)
    with pytest.raises(ValueError, match="finite"):
        PairedMoments(n=1, sum_d=math.inf)
    with pytest.raises(ValueError, match="cannot be negative"):
        PairedMoments() - PairedMoments.of([1], [1], metric="accuracy")
    with pytest.raises(ValueError, match="both answers scored"):
        PairedMoments.of([1, 0], [1], metric="accuracy")
    with pytest.raises(ValueError, match=r"1\.0 \(right\) or 0\.0"):
        PairedMoments.of([1, 0.5], [1, 1], metric="accuracy")
    with pytest.raises(ValueError, match="cannot be negative"):
        PairedMoments.of([1.0, -0.5], [1.0, 1.0], metric="mae")
    with pytest.raises(ValueError, match="finite"):
        PairedMoments.of([1.0, math.nan], [1.0, 1.0], metric="mae")


def test_the_sequence_refuses_sums_no_pairs_can_have() -> None:
    honest = PairedMoments.of([1, 0, 1], [0, 1, 1], metric="accuracy")
    forged = PairedMoments(honest.n, honest.sum_d + 1, *[getattr(honest, k) for k in SUMS_AFTER_D])
    with pytest.raises(ValueError, match="not the sums of right/wrong pairs"):
        paired.paired_sequence(forged, metric="accuracy")
    with pytest.raises(ValueError, match="not the sums of right/wrong pairs"):
        paired.paired_sequence(
            PairedMoments(3, 0.0, 0.0, 3.0, 3.0, 3.0, 3.0, 1, 0), metric="accuracy"
        )
    with pytest.raises(ValueError, match="not the sums of pairs of absolute errors"):
        paired.paired_sequence(honest, metric="mae")  # b and c belong to a classifier


SUMS_AFTER_D = ("sum_d2", "sum_p", "sum_p2", "sum_s", "sum_s2", "b", "c")


# McNemar


def mcnemar_by_hand(b: int, c: int) -> float:
    """Twice the exact binomial tail of the rarer kind of discordant pair, in exact fractions."""
    n = b + c
    tail = sum(Fraction(math.comb(n, k), 2**n) for k in range(min(b, c) + 1))
    return float(min(Fraction(1), 2 * tail))


@pytest.mark.parametrize(("b", "c"), [(0, 1), (0, 5), (1, 9), (3, 3), (7, 2), (12, 30), (0, 60)])
def test_mcnemar_is_the_exact_binomial_tail_summed_by_hand(b: int, c: int) -> None:
    assert paired.mcnemar(b, c) == pytest.approx(mcnemar_by_hand(b, c), rel=1e-12)
    assert paired.mcnemar(b, c) == paired.mcnemar(c, b), "the two kinds are symmetric"


def test_mcnemar_is_known_small_values() -> None:
    assert paired.mcnemar(0, 5) == 2 / 32  # both tails of 5 discordant pairs all of one kind
    assert paired.mcnemar(1, 9) == pytest.approx(2 * 11 / 1024, rel=1e-12)
    assert paired.mcnemar(0, 0) == 1.0, "no discordant pair: no evidence either way"


def test_mcnemar_approaches_the_chi_square_version_with_many_discordant_pairs() -> None:
    # McNemar's own statistic with Edwards' continuity correction, chi^2 with 1 degree of
    # freedom: the large-sample approximation of the exact test.
    b, c = 460, 540
    approximate = float(chi2.sf((abs(b - c) - 1) ** 2 / (b + c), 1))
    assert paired.mcnemar(b, c) == pytest.approx(approximate, rel=0.02)


def test_mcnemar_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="whole counts"):
        paired.mcnemar(1.5, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot be negative"):
        paired.mcnemar(-1, 2)


# Wilcoxon


def test_wilcoxon_is_the_signed_rank_test_worked_out_by_hand() -> None:
    # The zero is dropped; |d| ranks 0.2 -> 1, 0.3 -> 2, 0.5 -> 3, 1.5 -> 4, so W+ = 9 and
    # W- = 1. Of the 2^4 equally likely sign patterns, 2 have W- <= 1 (none or only rank 1
    # negative) and 2 have W+ <= 1: p = 4 / 16.
    result = paired.wilcoxon([0.5, 1.5, -0.2, 0.0, 0.3])
    assert result == (1.0, 0.25)


def test_wilcoxon_is_scipys_with_zeros_dropped() -> None:
    rng = np.random.default_rng(3)
    small = np.round(rng.normal(0.3, 1, 40), 3)  # exact distribution
    tied = rng.choice([-1.0, 0.0, 0.0, 1.0], 300)  # a classifier's d: zeros and ties
    skewed = np.where(rng.random(120) < 0.2, 0.0, rng.lognormal(0, 1, 120) - 1.2)
    for d in (small, tied, skewed):
        theirs = scipy_wilcoxon(d, zero_method="wilcox")
        assert paired.wilcoxon(d) == (float(theirs.statistic), float(theirs.pvalue))
    assert paired.wilcoxon(tied) != tuple(scipy_wilcoxon(tied, zero_method="pratt"))


def test_wilcoxon_without_a_nonzero_difference_finds_nothing_rather_than_nan() -> None:
    assert paired.wilcoxon([]) == (0.0, 1.0)
    assert paired.wilcoxon([0.0, 0.0, 0.0]) == (0.0, 1.0)
    assert paired.wilcoxon([0.0, 2.0]) == (0.0, 1.0), "one nonzero difference proves nothing"
    with pytest.raises(ValueError, match="finite"):
        paired.wilcoxon([1.0, math.nan])


def test_wilcoxon_can_favour_the_shadow_while_its_mean_error_is_worse() -> None:
    # A shadow 1 better on 40 requests and 50 worse on 2: its mean absolute error is higher
    # (mean d < 0), yet the signed ranks favour it: the test is about the pseudo-median.
    d = np.array([1.0] * 40 + [-50.0] * 2)
    assert d.mean() < 0
    result = paired.wilcoxon(d)
    assert result.p_value < 0.001
    assert result.statistic == 2 * 41.5, "the two large losses have the top ranks, 41 and 42"
    sequence = paired.paired_sequence(
        PairedMoments.of(d + 50, np.full(42, 50.0), metric="mae"), metric="mae"
    )
    assert sequence.estimate < 0


# The sequence, by hand


def test_the_classifier_sequence_is_sequentials_formula_with_the_pseudo_pairs() -> None:
    # 200 pairs, 10 where only production was right and 25 where only the shadow was: one
    # pseudo pair of each sign gives var = (35 + 2) / 202 - (15 / 202)^2.
    m = PairedMoments(200, 15.0, 35.0, 150.0, 150.0, 165.0, 165.0, 10, 25)
    variance = 37 / 202 - (15 / 202) ** 2
    rho2 = (2 * math.log(20) + math.log(1 + 2 * math.log(20))) / 1000
    radius = math.sqrt(
        variance
        * 2
        * (200 * rho2 + 1)
        / (200**2 * rho2)
        * math.log(math.sqrt(200 * rho2 + 1) / 0.05)
    )
    result = paired.paired_sequence(m, metric="accuracy", planned=1000)
    assert result.estimate == 15 / 200
    assert result.upper - result.estimate == pytest.approx(radius, rel=1e-12)
    assert result.estimate - result.lower == pytest.approx(radius, rel=1e-12)
    assert radius == pytest.approx(
        float(sequential.half_width(math.sqrt(variance), 200, rho2, 0.05))
    )
    z = result.estimate / math.sqrt(variance / 200)
    p = math.sqrt(1 + 200 * rho2) * math.exp(-200 * rho2 * z * z / (2 * (1 + 200 * rho2)))
    assert result.p_value == pytest.approx(min(1.0, p), rel=1e-12)


def test_the_regressor_sequence_uses_the_sample_variance_of_d() -> None:
    e_p = np.array([3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0] * 5)
    e_s = np.array([2.5, 1.5, 3.0, 1.0, 5.5, 7.0, 2.0, 4.0] * 5)
    d = (e_p - e_s).tolist()
    n = len(d)
    rho2 = sequential.rho_squared(0.1, 400)
    radius = statistics.stdev(d) * math.sqrt(
        2 * (n * rho2 + 1) / (n * n * rho2) * math.log(math.sqrt(n * rho2 + 1) / 0.1)
    )
    result = paired.paired_sequence(
        PairedMoments.of(e_p, e_s, metric="mae"), metric="mae", alpha=0.1, planned=400
    )
    assert result.estimate == pytest.approx(statistics.mean(d), rel=1e-12)
    assert (result.lower, result.upper) == pytest.approx(
        (statistics.mean(d) - radius, statistics.mean(d) + radius), rel=1e-12
    )
    assert result.decided and result.better == "shadow"


def test_concordant_pairs_do_not_collapse_the_sequence() -> None:
    # 40 pairs, both right on all: the plug-in variance is 0, the pseudo pairs make it 2 / 42.
    m = PairedMoments.of(np.ones(40), np.ones(40), metric="accuracy")
    result = paired.paired_sequence(m, metric="accuracy")
    radius = float(
        sequential.half_width(math.sqrt(2 / 42), 40, sequential.rho_squared(0.05, 2000), 0.05)
    )
    assert (result.lower, result.upper) == pytest.approx((-radius, radius), rel=1e-12)
    assert radius > 0.2 and not result.decided


def test_alike_differences_of_errors_get_a_spread_of_a_hundredth_of_the_mae() -> None:
    # The shadow is 0.5 better on each of 50 requests: var(d) = 0; mean |e| = (3 + 2.5) / 2.
    m = PairedMoments.of(np.full(50, 3.0), np.full(50, 2.5), metric="mae")
    result = paired.paired_sequence(m, metric="mae")
    sd = paired.PAIRED_RELATIVE_SD_FLOOR * 2.75
    radius = float(sequential.half_width(sd, 50, sequential.rho_squared(0.05, 2000), 0.05))
    assert result.upper - result.estimate == pytest.approx(radius, rel=1e-9)
    perfect = paired.paired_sequence(
        PairedMoments.of(np.zeros(50), np.zeros(50), metric="mae"), metric="mae"
    )
    assert (perfect.estimate, perfect.lower, perfect.upper) == (0.0, 0.0, 0.0)
    assert not perfect.decided and perfect.p_value == 1.0


def test_no_look_decides_before_the_minimum_count_of_pairs() -> None:
    below = MIN_COUNT - 1  # the shadow right and production wrong on every pair
    early = paired.paired_sequence(
        PairedMoments.of(np.zeros(below), np.ones(below), metric="accuracy"), metric="accuracy"
    )
    assert early.lower > 0, "the sequence excludes 0 already..."
    assert not early.decided and early.better is None, "...but too few pairs to trust it"
    assert early.p_value == 1.0
    at = paired.paired_sequence(
        PairedMoments.of(np.zeros(MIN_COUNT), np.ones(MIN_COUNT), metric="accuracy"),
        metric="accuracy",
    )
    assert at.decided and at.better == "shadow" and at.p_value < 0.05


def test_the_better_model_is_named_by_the_sign_of_d_for_both_metrics() -> None:
    worse_shadow = PairedMoments(1000, -80.0, 100.0, 850.0, 850.0, 770.0, 770.0, 90, 10)
    result = paired.paired_sequence(worse_shadow, metric="accuracy")
    assert result.upper < 0 and result.better == "production"
    e = np.random.default_rng(5).lognormal(0, 1, 500)
    result = paired.paired_sequence(PairedMoments.of(e, 1.5 * e, metric="mae"), metric="mae")
    assert result.upper < 0 and result.better == "production", "the shadow errs more"


def test_an_empty_test_gives_the_whole_range_and_one_error_an_unbounded_sequence() -> None:
    empty = paired.paired_sequence(PairedMoments(), metric="accuracy")
    assert math.isnan(empty.estimate) and (empty.lower, empty.upper) == (-1.0, 1.0)
    assert not empty.decided and empty.p_value == 1.0
    one = paired.paired_sequence(PairedMoments.of([2.0], [1.0], metric="mae"), metric="mae")
    assert (one.lower, one.upper) == (-math.inf, math.inf) and one.p_value == 1.0


def random_accuracy_moments(rng: np.random.Generator, size: int) -> list[PairedMoments]:
    n = rng.integers(0, 3000, size)
    cells = [rng.multinomial(k, rng.dirichlet([8, 1, 1, 2])) for k in n]
    return [
        accuracy_moments(int(k), both, b, c) for k, (both, b, c, _) in zip(n, cells, strict=True)
    ]


def accuracy_moments(n: int, both: int, b: int, c: int) -> PairedMoments:
    """The sums of n pairs: both right on ``both``, only production on b, only the shadow on c."""
    sum_p, sum_s = float(both + b), float(both + c)
    return PairedMoments(n, float(c - b), float(b + c), sum_p, sum_p, sum_s, sum_s, int(b), int(c))


def test_the_vectorised_and_the_scalar_look_agree() -> None:
    rng = np.random.default_rng(11)
    accuracy = random_accuracy_moments(rng, 300)
    errors = [
        PairedMoments.of(
            e, e * rng.uniform(0.8, 1.2) + rng.normal(0, 0.1, len(e)).clip(0), metric="mae"
        )
        for e in (rng.lognormal(0, 1, int(k)) for k in rng.integers(0, 400, 300))
    ]
    for metric, moments in (("accuracy", accuracy), ("mae", errors)):
        columns = [
            np.array([getattr(m, k) for m in moments], dtype=float)
            for k in ("n", "sum_d", "sum_d2", "sum_p", "sum_s")
        ]
        look = paired.paired_bounds(
            *columns, metric=metric, alpha=0.05, rho2=sequential.rho_squared(0.05, 2000)
        )
        scalar = [paired.paired_sequence(m, metric=metric) for m in moments]
        np.testing.assert_allclose(look.estimate, [s.estimate for s in scalar], rtol=1e-13)
        np.testing.assert_allclose(look.lower, [s.lower for s in scalar], rtol=1e-13)
        np.testing.assert_allclose(look.upper, [s.upper for s in scalar], rtol=1e-13)
        np.testing.assert_allclose(look.p_value, [s.p_value for s in scalar], rtol=1e-13)
        assert look.decided.tolist() == [s.decided for s in scalar]
        assert 0 < look.decided.mean() < 1, "both kinds of look are compared"


def test_a_look_decides_exactly_when_its_p_value_is_at_most_alpha() -> None:
    moments = random_accuracy_moments(np.random.default_rng(12), 2000)
    columns = [
        np.array([getattr(m, k) for m in moments], dtype=float)
        for k in ("n", "sum_d", "sum_d2", "sum_p", "sum_s")
    ]
    look = paired.paired_bounds(
        *columns, metric="accuracy", alpha=0.05, rho2=sequential.rho_squared(0.05, 2000)
    )
    assert 0.05 < look.decided.mean() < 0.95
    assert np.array_equal(look.decided, look.p_value <= 0.05)


# The pairing gain


def test_the_pairing_gain_is_numpys_variance_ratio() -> None:
    rng = np.random.default_rng(8)
    hard = rng.lognormal(0, 1, 800)  # what both regressors find hard
    e_p, e_s = hard * rng.uniform(0.7, 1.3, 800), hard * rng.uniform(0.7, 1.3, 800)
    gain = paired.pairing_gain(PairedMoments.of(e_p, e_s, metric="mae"))
    expected = np.var(e_p - e_s, ddof=1) / (np.var(e_p, ddof=1) + np.var(e_s, ddof=1))
    assert gain == pytest.approx(expected, rel=1e-9)
    assert gain is not None and gain < 0.2, "errors on the same requests: pairing helps"
    apart = paired.pairing_gain(
        PairedMoments.of(rng.lognormal(0, 1, 5000), rng.lognormal(0, 1, 5000), metric="mae")
    )
    assert apart == pytest.approx(1.0, abs=0.05), (
        "independent errors: pairing neither helps nor hurts"
    )


def test_the_pairing_gain_is_none_when_undefined() -> None:
    assert paired.pairing_gain(PairedMoments.of([1], [0], metric="accuracy")) is None
    assert (
        paired.pairing_gain(PairedMoments.of(np.ones(50), np.ones(50), metric="accuracy")) is None
    )
    same = PairedMoments.of([1, 0, 1, 1], [1, 0, 1, 1], metric="accuracy")
    assert paired.pairing_gain(same) == 0.0, "identical answers: nothing is left after pairing"


# Real classifiers' answers


@pytest.fixture(scope="module")
def breast_cancer_answers() -> tuple[FloatArray, FloatArray]:
    """1.0 / 0.0 per held-out patient: right or wrong, for a logistic regression (production)
    and a depth-2 tree (the shadow), trained here on load_breast_cancer."""
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.4, random_state=0, stratify=y
    )
    production = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
        x_train, y_train
    )
    shadow = DecisionTreeClassifier(max_depth=2, random_state=0).fit(x_train, y_train)
    return (
        (production.predict(x_test) == y_test).astype(float),
        (shadow.predict(x_test) == y_test).astype(float),
    )


def test_real_answers_give_consistent_moments_and_tests(
    breast_cancer_answers: tuple[FloatArray, FloatArray],
) -> None:
    x_p, x_s = breast_cancer_answers
    m = PairedMoments.of(x_p, x_s, metric="accuracy")
    assert m.n == len(x_p) == 228
    assert m.b == int(np.sum((x_p == 1) & (x_s == 0))) and m.c == int(
        np.sum((x_p == 0) & (x_s == 1))
    )
    assert m.b > m.c > 0, "the tree is the weaker model here, and not always"
    assert m.mean_d == pytest.approx(x_s.mean() - x_p.mean(), rel=1e-12)
    assert paired.mcnemar(m.b, m.c) == pytest.approx(mcnemar_by_hand(m.b, m.c), rel=1e-12)
    gain = paired.pairing_gain(m)
    d = x_s - x_p
    assert gain == pytest.approx(
        np.var(d, ddof=1) / (np.var(x_p, ddof=1) + np.var(x_s, ddof=1)), rel=1e-12
    )
    theirs = scipy_wilcoxon(d, zero_method="wilcox")
    assert paired.wilcoxon(d) == (float(theirs.statistic), float(theirs.pvalue))
    result = paired.paired_sequence(m, metric="accuracy", planned=228)
    assert result.lower < m.mean_d < result.upper
    # What the sequence gives up for the right to look at any time: the same data are
    # decided or not, but its interval is wider than McNemar's fixed-horizon z interval.
    fixed = norm.ppf(0.975) * math.sqrt(np.var(d) / m.n)
    assert result.upper - result.estimate > fixed


# Coverage under peeking, by brute force: seeded streams of pairs, a look after every 20 up
# to 2,000 (100 looks), as bench/shadow_simulation.py does with 10,000 streams of real pairs.

STREAMS, LOOKS, STEP = 2000, 100, 20


def upper_99(hits: int, trials: int) -> float:
    """The one-sided upper 99 % Clopper-Pearson bound of a binomial proportion."""
    return 1.0 if hits == trials else float(beta.ppf(0.99, hits + 1, trials - hits))


def test_with_equal_classifiers_a_false_winner_is_rare_however_often_one_looks() -> None:
    # Pairs as the Adult forest and extra trees give them: discordant on 3.2 % of requests,
    # here split evenly between the two kinds (equal accuracy). Only the counts of the four
    # cells matter, so each look's 20 pairs are drawn as one multinomial count.
    rng = np.random.default_rng(2027)
    cells = rng.multinomial(STEP, [0.85, 0.016, 0.016, 0.118], (STREAMS, LOOKS)).cumsum(axis=1)
    b, c = cells[..., 1].astype(float), cells[..., 2].astype(float)
    n = np.broadcast_to(STEP * np.arange(1.0, LOOKS + 1), (STREAMS, LOOKS))
    look = paired.paired_bounds(
        n, c - b, b + c, n - cells[..., 3] - c, n - cells[..., 3] - b,
        metric="accuracy", alpha=0.05, rho2=sequential.rho_squared(0.05, STEP * LOOKS),
    )  # fmt: skip
    false_winners = int(look.decided.any(axis=1).sum())
    assert upper_99(false_winners, STREAMS) <= 0.05, f"{false_winners} of {STREAMS} streams"
    # The exact McNemar test at every look (from MIN_COUNT on) errs far more: the simulation
    # could have failed.
    tail = binom.cdf(np.minimum(b, c), b + c, 0.5)
    peeked = ((n >= MIN_COUNT) & (b + c > 0) & (2 * tail <= 0.05)).any(axis=1)
    assert peeked.mean() > 0.15


def test_with_equal_regressors_a_false_winner_is_rare_however_often_one_looks() -> None:
    # Skewed errors sharing what is hard (lognormal), the models' roles swapped at random
    # per request: E[d] = 0 exactly, with a realistic spread.
    rng = np.random.default_rng(2028)
    hard = rng.lognormal(0, 1, (STREAMS, LOOKS, STEP))
    e_1, e_2 = hard * rng.uniform(0.6, 1.4, hard.shape), hard * rng.uniform(0.6, 1.4, hard.shape)
    d = np.where(rng.random(hard.shape) < 0.5, e_1 - e_2, e_2 - e_1)
    n = np.broadcast_to(STEP * np.arange(1.0, LOOKS + 1), (STREAMS, LOOKS))
    cumulative = [v.sum(axis=2).cumsum(axis=1) for v in (d, np.square(d), e_1, e_2)]
    look = paired.paired_bounds(
        n, *cumulative, metric="mae", alpha=0.05, rho2=sequential.rho_squared(0.05, STEP * LOOKS)
    )
    false_winners = int(look.decided.any(axis=1).sum())
    assert upper_99(false_winners, STREAMS) <= 0.05, f"{false_winners} of {STREAMS} streams"
    z = cumulative[0] / n / np.sqrt((cumulative[1] - cumulative[0] ** 2 / n) / (n - 1) / n)
    assert ((n >= MIN_COUNT) & (np.abs(z) > norm.ppf(0.975))).any(axis=1).mean() > 0.15


def test_the_sequence_covers_a_real_difference_at_every_look() -> None:
    # The shadow right where production is wrong twice as often as the reverse: the truth is
    # 0.032 - 0.016 = 0.016, and the sequence must miss it at some look at most alpha of the time.
    rng = np.random.default_rng(2029)
    cells = rng.multinomial(STEP, [0.85, 0.016, 0.032, 0.102], (STREAMS, LOOKS)).cumsum(axis=1)
    b, c = cells[..., 1].astype(float), cells[..., 2].astype(float)
    n = np.broadcast_to(STEP * np.arange(1.0, LOOKS + 1), (STREAMS, LOOKS))
    look = paired.paired_bounds(
        n, c - b, b + c, np.zeros_like(n), np.zeros_like(n),
        metric="accuracy", alpha=0.05, rho2=sequential.rho_squared(0.05, STEP * LOOKS),
    )  # fmt: skip
    missed = ((n >= MIN_COUNT) & ((look.lower > 0.016) | (look.upper < 0.016))).any(axis=1)
    assert upper_99(int(missed.sum()), STREAMS) <= 0.05, f"missed in {missed.mean():.3f}"
    assert look.decided[:, -1].mean() > 0.2, "and finds the better shadow in many streams"
