"""Shadow deployments (issue 27): how many labelled requests does judging a candidate model
take when it shadows production, against an A/B test, and does watching the paired
confidence sequence of apps/endpoints/experiments/paired.py keep its promise?

Real models, real pairs. The Adult income classifiers are trained as research/train.py
trains them (adult.data, same parameters and seeds), plus a logistic regression on the same
encoded columns as a deliberately weaker production model; each row of adult.test gives
both models' right/wrong. The regressors are five-fold out-of-fold absolute errors on
load_diabetes (442 rows): a ridge regression, the demo's gradient boosting pipeline, and the
same pipeline with another seed (a retrained model). A simulated test streams labelled
requests drawn with replacement from those rows, so each population's truth is known
exactly: its rows' mean.

**Power.** Three ways to spend the same labels, each watched with its confidence sequence
(a look every 20 labels, stop at the first look that excludes 0):

- (i) A/B: each label scores one model, half the labels per arm, two independent samples
  (``sequential.sequence_bounds``, the service's A/B sequence);
- (ii) both models scored on every label, analysed as two independent samples of n each
  (rows drawn independently per model): what scoring both on every label gains alone;
- (iii) paired: both models on every label, one d per label (``paired.paired_bounds``):
  what pairing adds, the correlation of the two models' errors.

Two side rows: (ii') the unpaired formula applied to the real pairs (what one gets by
computing two accuracies side by side on a shadow's data), and (iii') the paired sequence
tuned for the service's default N = 2,000 instead. Each design's mixture is tuned for twice
the labels its fixed-horizon z-test needs for 80 % power with the population's true
variances (about where a sequence, 1.55 times as wide at N, gets there); all designs look
at the same label counts, and (i), (ii) and (iii) use the same streams of rows where they
can (common random numbers). Reported: the labels by which 80 % of tests have named the
shadow better, the power at the other designs' 80 % points, the wrong-winner rate, and the
decomposition of the (i) -> (iii) gain into scoring both (i -> ii) and pairing (ii -> iii).

**False winner under peeking.** Equal models made from the real pairs: each drawn row's
production and shadow answers swap with probability 1/2, so E[d] = 0 exactly and the
discordance (or the spread of d) is the real one. 10,000 tests per population, a look
every 20 pairs up to N (tuned for N): how often the sequence ever named a winner, with the
upper 99 % Clopper-Pearson bound, against McNemar's exact test (classifiers) or the paired
t-test (regressors) looked at in the same way from MIN_COUNT on, and looked at once at N
(and Wilcoxon at N for regressors). Swapping makes d symmetric about 0, the easy case for a
central limit theorem; so the same rows, unswapped, also check coverage where d is as
lopsided as it really is (b != c): how often the true mean d was outside some look's
sequence, which must also stay within alpha.

    .venv/bin/python bench/shadow_simulation.py                       # the docs/shadows.md tables
    .venv/bin/python bench/shadow_simulation.py --runs 200 --null-runs 2000   # quicker, noisier
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
from scipy.stats import binom, norm
from scipy.stats import t as student

from common import REPO, save

sys.path.insert(0, str(REPO / "backend" / "server"))
sys.path.insert(0, str(REPO / "research"))

from sequential_simulation import upper_99

from apps.endpoints.experiments import paired, sequential
from apps.endpoints.experiments.paired import PairedMoments

ALPHA = 0.05
STEP = 20  # labels between two looks (10 per arm in the A/B)
POWER = 0.8
NULL_PLANNED = (sequential.DEFAULT_PLANNED, 20_000)  # pairs; 20,000 for the Adult pairs only
BLOCK_ROWS = 3_000_000  # row draws held at once per stream (tests x labels), some 24 MB a column
Z_POWER = norm.ppf(1 - ALPHA / 2) + norm.ppf(POWER)  # 2.80: a fixed-horizon test's 80 % power

Floats = npt.NDArray[np.float64]
Flags = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Population:
    """The rows a simulated test draws its labelled requests from."""

    name: str
    metric: str  # "accuracy" or "mae"
    production: str
    shadow: str
    x_p: Floats  # per row: 1.0 / 0.0 right or wrong, or the absolute error
    x_s: Floats

    @property
    def d(self) -> Floats:
        return paired.differences(self.x_p, self.x_s, metric=self.metric)

    @property
    def delta(self) -> float:
        """The truth: the mean of d over the rows, positive when the shadow is better."""
        return float(self.d.mean())

    def fixed_labels(self, variance: float) -> float:
        """Labels a fixed-horizon z-test needs for 80 % power, with this per-label variance
        of the estimate."""
        return float(Z_POWER**2 * variance / self.delta**2)

    @property
    def unpaired_variance(self) -> float:
        return float(self.x_p.var() + self.x_s.var())


# The models


def adult_populations() -> list[Population]:
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from adult import load_split, verify_hashes
    from apps.ml.income_classifier.preprocessing import Preprocessing
    from train import MODELS, labels

    verify_hashes()
    train_frame, test_frame = load_split("adult.data"), load_split("adult.test")
    preprocessing = Preprocessing.fit(train_frame)
    x_train, y_train = preprocessing.encode_frame(train_frame), labels(train_frame)
    x_test, y_test = preprocessing.encode_frame(test_frame), labels(test_frame)
    right: dict[str, Floats] = {}
    for key, (_, estimator) in MODELS.items():
        model = clone(estimator).set_params(n_jobs=2).fit(x_train, y_train)
        right[key] = (model.predict(x_test) == y_test).astype(float)
    logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    right["logistic"] = (logistic.fit(x_train, y_train).predict(x_test) == y_test).astype(float)
    return [
        Population(
            "Adult, extra trees -> forest", "accuracy", "extra trees", "random forest",
            right["extra_trees"], right["random_forest"],
        ),
        Population(
            "Adult, logistic -> forest", "accuracy", "logistic regression", "random forest",
            right["logistic"], right["random_forest"],
        ),
    ]  # fmt: skip


def diabetes_populations() -> list[Population]:
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from train import SEED

    x, y = load_diabetes(return_X_y=True)
    folds = KFold(5, shuffle=True, random_state=SEED)

    def boosting(seed: int) -> object:  # the demo's regressor (research/train.py)
        return make_pipeline(
            StandardScaler(), GradientBoostingRegressor(max_depth=2, random_state=seed)
        )

    models = {"ridge": Ridge(alpha=1.0), "boosting": boosting(SEED), "reseeded": boosting(7)}
    error = {k: np.abs(cross_val_predict(m, x, y, cv=folds) - y) for k, m in models.items()}
    return [
        Population(
            "diabetes, ridge -> boosting", "mae", "ridge", "gradient boosting",
            error["ridge"], error["boosting"],
        ),
        Population(
            "diabetes, boosting -> reseeded", "mae", "gradient boosting", "the same, seed 7",
            error["boosting"], error["reseeded"],
        ),
    ]  # fmt: skip


def population_table(populations: list[Population]) -> Iterator[str]:
    yield (
        "| population | rows | production | shadow | mean d (shadow better > 0) | discordant "
        "| sd(d) | pairing gain | McNemar / Wilcoxon p, all rows |"
    )
    yield "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for pop in populations:
        m = PairedMoments.of(pop.x_p, pop.x_s, metric=pop.metric)
        if pop.metric == "accuracy":
            scores = f"accuracy {pop.x_p.mean():.4f}", f"{pop.x_s.mean():.4f}"
            discordant, test = f"{(m.b + m.c) / m.n:.4f}", paired.mcnemar(m.b, m.c)
        else:
            scores = f"MAE {pop.x_p.mean():.2f}", f"{pop.x_s.mean():.2f}"
            discordant, test = "-", paired.wilcoxon(pop.d).p_value
        yield (
            f"| {pop.name} | {m.n:,} | {pop.production}: {scores[0]} | {pop.shadow}: {scores[1]} "
            f"| {pop.delta:+.4f} | {discordant} | {pop.d.std(ddof=1):.4f} "
            f"| {paired.pairing_gain(m):.3f} | {test:.2g} |"
        )


# Power


@dataclass(frozen=True)
class Design:
    name: str
    kind: str  # "ab", "independent", "same rows" (two samples) or "paired"
    per_label: float  # per-label variance of the estimate its analysis assumes (for tuning)
    observations: int  # observations per label, as its sequence counts them
    default_planned: bool = False  # tuned for the service's default N instead


def designs(pop: Population) -> list[Design]:
    unpaired, differences = pop.unpaired_variance, float(pop.d.var())
    return [
        Design("(i) A/B, one model per label", "ab", 2 * unpaired, 1),
        Design("(ii) both per label, independent samples", "independent", unpaired, 2),
        Design("(ii') both per label, unpaired formula on the pairs", "same rows", unpaired, 2),
        Design("(iii) paired", "paired", differences, 1),
        Design(
            f"(iii') paired, N = {sequential.DEFAULT_PLANNED:,} (default)",
            "paired", differences, 1, default_planned=True,
        ),
    ]  # fmt: skip


def planned(pop: Population, design: Design) -> int:
    """The design's N, in its observations: twice its fixed-horizon 80 % labels."""
    if design.default_planned:
        return sequential.DEFAULT_PLANNED
    return math.ceil(2 * pop.fixed_labels(design.per_label)) * design.observations


def horizon(pop: Population) -> int:
    """Labels a simulated test may use: three times the A/B's fixed-horizon 80 % point."""
    return STEP * math.ceil(3 * pop.fixed_labels(2 * pop.unpaired_variance) / STEP)


@dataclass
class Stops:
    """Per simulated test and design: the labels at the first deciding look (0 if none)
    and whether it named the shadow."""

    labels: Ints
    shadow: Flags


def cumulative(values: Floats, rows: Ints, group: int) -> Floats:
    """Running sums of ``values`` over each test's drawn rows, every ``group`` rows."""
    drawn = values[rows]
    sums: Floats = drawn.reshape(rows.shape[0], -1, group).sum(axis=2).cumsum(axis=1)
    return sums


def first_decisions(
    decided: Flags, shadow_ahead: Flags, labels_at: Ints
) -> tuple[Ints, Flags]:  # fmt: skip
    first = decided.argmax(axis=1)
    stopped = decided.any(axis=1)
    named = shadow_ahead[np.arange(len(first)), first]
    return np.where(stopped, labels_at[first], 0), stopped & named


def power_block(pop: Population, rng: np.random.Generator, runs: int, labels: int) -> list[Stops]:
    half = STEP // 2
    looks = labels // STEP
    rows_1 = rng.integers(0, len(pop.x_p), (runs, labels))  # production's stream (and the pairs)
    rows_2 = rng.integers(0, len(pop.x_p), (runs, labels))  # the shadow's, independent
    p1, pp1 = (cumulative(v, rows_1, half) for v in (pop.x_p, np.square(pop.x_p)))
    s1, ss1 = (cumulative(v, rows_1, half) for v in (pop.x_s, np.square(pop.x_s)))
    s2, ss2 = (cumulative(v, rows_2, half) for v in (pop.x_s, np.square(pop.x_s)))
    d1, dd1 = (cumulative(v, rows_1, half) for v in (pop.d, np.square(pop.d)))
    at_labels = np.arange(2, 2 * looks + 1, 2) - 1  # group index of each look's labels
    at_half = np.arange(1, looks + 1) - 1  # of half of them (one A/B arm)
    n = np.broadcast_to(STEP * np.arange(1, looks + 1, dtype=float), (runs, looks))
    bernoulli = pop.metric == "accuracy"
    stops = []
    for design in designs(pop):
        rho2 = sequential.rho_squared(ALPHA, planned(pop, design))
        if design.kind == "paired":
            look = paired.paired_bounds(
                n, d1[:, at_labels], dd1[:, at_labels], p1[:, at_labels], s1[:, at_labels],
                metric=pop.metric, alpha=ALPHA, rho2=rho2,
            )  # fmt: skip
            decided, shadow_ahead = look.decided, look.estimate > 0
        else:
            if design.kind == "ab":  # L / 2 labels per arm, independent rows
                arms = (p1, pp1, s2, ss2, at_half, n / 2)
            elif design.kind == "independent":  # L per arm, independent rows
                arms = (p1, pp1, s2, ss2, at_labels, n)
            else:  # L per arm, the same rows
                arms = (p1, pp1, s1, ss1, at_labels, n)
            sp, spp, ss, sss, at, count = arms
            two = sequential.sequence_bounds(
                sp[:, at], spp[:, at], count, ss[:, at], sss[:, at], count,
                bernoulli=bernoulli, alpha=ALPHA, rho2=rho2,
            )  # fmt: skip
            # Arm 2 is the shadow; sequence_bounds' estimate is arm 2's mean minus arm 1's.
            decided, shadow_ahead = two.decided, (two.estimate > 0) == bernoulli
        stops.append(Stops(*first_decisions(decided, shadow_ahead, STEP * (at_half + 1))))
    return stops


def simulate_power(pop: Population, runs: int, seed: int) -> list[Stops]:
    labels = horizon(pop)
    rng = np.random.default_rng(seed)
    block = max(1, BLOCK_ROWS // labels)
    blocks = [
        power_block(pop, rng, min(block, runs - start), labels) for start in range(0, runs, block)
    ]
    return [
        Stops(
            np.concatenate([b[i].labels for b in blocks]),
            np.concatenate([b[i].shadow for b in blocks]),
        )
        for i in range(len(blocks[0]))
    ]


def labels_for_power(stops: Stops, runs: int) -> int | None:
    """The fewest labels by which POWER of the tests had named the shadow better."""
    right = np.sort(stops.labels[stops.shadow])
    needed = math.ceil(POWER * runs)
    return int(right[needed - 1]) if len(right) >= needed else None


def power_at(stops: Stops, labels: int) -> float:
    return float(np.mean(stops.shadow & (stops.labels <= labels)))


def power_tables(pop: Population, runs: int, seed: int) -> Iterator[str]:
    stops = simulate_power(pop, runs, seed)
    needed = [labels_for_power(s, runs) for s in stops]
    ours = designs(pop)
    # Power at the 80 % points of (i), (ii) and (iii): what each budget buys the others.
    budgets = sorted(
        {n for n, d in zip(needed[:4], ours, strict=False) if n and d.kind != "same rows"}
    )
    yield (
        f"{pop.name}: production {pop.production}, shadow {pop.shadow}, true mean d "
        f"{pop.delta:+.4f}; {runs:,} tests of up to {horizon(pop):,} labels each."
    )
    yield ""
    yield (
        "| design | N (observations) | fixed-horizon labels for 80 % | labels for 80 % power "
        "| median labels at a stop | wrong winner | "
        + " | ".join(f"power at {b:,} labels" for b in budgets)
        + " |"
    )
    yield "| --- | ---: | ---: | ---: | ---: | ---: |" + " ---: |" * len(budgets)
    for design, stop, need in zip(ours, stops, needed, strict=True):
        stopped = stop.labels > 0
        fixed = None if design.default_planned else pop.fixed_labels(design.per_label)
        median = f"{np.median(stop.labels[stopped]):,.0f}" if stopped.any() else "-"
        yield (
            f"| {design.name} | {planned(pop, design):,} | {f'{fixed:,.0f}' if fixed else '-'} "
            f"| {f'{need:,}' if need else f'> {horizon(pop):,}'} | {median} "
            f"| {np.mean(stopped & ~stop.shadow):.4f} | "
            + " | ".join(f"{power_at(stop, b):.3f}" for b in budgets)
            + " |"
        )
    yield ""
    ab, both, _, pairs, _ = needed
    variance_ratio = pop.unpaired_variance / float(pop.d.var())
    if ab and both and pairs:
        total = ab / pairs
        yield (
            f"Gain (i) -> (iii): {total:.1f} times fewer labels; scoring both on every label "
            f"(i -> ii) {ab / both:.2f} times (variances: 2), pairing (ii -> iii) "
            f"{both / pairs:.2f} times (variances: 1 / pairing gain = {variance_ratio:.2f}); "
            f"in shares of the log gain, {math.log(ab / both) / math.log(total):.0%} from "
            f"scoring both and {math.log(both / pairs) / math.log(total):.0%} from pairing."
        )
    else:
        yield "Some design did not reach 80 % power within the horizon: no decomposition."


# False winners under peeking


@dataclass
class NullOutcome:
    """Per simulated test with equal models."""

    sequence: Flags  # the sequence excluded 0 at some look
    peeked: Flags  # the fixed-horizon test was significant at some look (from MIN_COUNT)
    at_n: Flags  # ...at the last look, N
    wilcoxon_at_n: Flags  # paired.wilcoxon at N (regressors; False for classifiers)
    real_missed: Flags  # the same rows unswapped: the true mean d outside some look's sequence


def null_block(pop: Population, rng: np.random.Generator, runs: int, pairs: int) -> NullOutcome:
    rows = rng.integers(0, len(pop.x_p), (runs, pairs))
    swap = rng.random((runs, pairs)) < 0.5
    real_p, real_s = pop.x_p[rows], pop.x_s[rows]
    x_p, x_s = np.where(swap, real_s, real_p), np.where(swap, real_p, real_s)
    d = paired.differences(x_p, x_s, metric=pop.metric)
    looks = pairs // STEP

    def running(v: Floats) -> Floats:
        sums: Floats = v.reshape(runs, looks, STEP).sum(axis=2).cumsum(axis=1)
        return sums

    sum_d, sum_d2 = running(d), running(np.square(d))
    n = np.broadcast_to(STEP * np.arange(1, looks + 1, dtype=float), (runs, looks))
    look = paired.paired_bounds(
        n, sum_d, sum_d2, running(x_p), running(x_s),
        metric=pop.metric, alpha=ALPHA, rho2=sequential.rho_squared(ALPHA, pairs),
    )  # fmt: skip
    significant = fixed_horizon_p(n, sum_d, sum_d2, metric=pop.metric) <= ALPHA
    regressors = pop.metric == "mae"
    real_d = paired.differences(real_p, real_s, metric=pop.metric)
    real = paired.paired_bounds(
        n, running(real_d), running(np.square(real_d)), running(real_p), running(real_s),
        metric=pop.metric, alpha=ALPHA, rho2=sequential.rho_squared(ALPHA, pairs),
    )  # fmt: skip
    outside = (real.lower > pop.delta) | (real.upper < pop.delta)
    return NullOutcome(
        sequence=np.asarray(look.decided.any(axis=1), dtype=np.bool_),
        peeked=np.asarray((significant & (n >= sequential.MIN_COUNT)).any(axis=1), dtype=np.bool_),
        at_n=significant[:, -1],
        wilcoxon_at_n=np.array([regressors and paired.wilcoxon(row).p_value <= ALPHA for row in d]),
        real_missed=np.asarray((outside & (n >= sequential.MIN_COUNT)).any(axis=1), dtype=np.bool_),
    )


def fixed_horizon_p(n: Floats, sum_d: Floats, sum_d2: Floats, *, metric: str) -> Floats:
    """McNemar's exact p (classifiers: b + c = sum_d2, c - b = sum_d) or the paired t-test's
    (regressors), over arrays."""
    if metric == "accuracy":
        b, c = (sum_d2 - sum_d) / 2, (sum_d2 + sum_d) / 2
        tail = binom.cdf(np.minimum(b, c), b + c, 0.5)
        return np.asarray(np.where(b + c > 0, np.minimum(1.0, 2 * tail), 1.0), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.sqrt((sum_d2 - sum_d * sum_d / n) / (n - 1))
        t = np.where(sd > 0, sum_d / n / (sd / np.sqrt(n)), 0.0)
    p: Floats = np.asarray(2 * student.sf(np.abs(t), n - 1), dtype=float)
    return p


def check_fixed_horizon_p() -> None:
    """The vectorised p-values above are paired.mcnemar's and scipy's paired t-test's."""
    from scipy.stats import ttest_1samp

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(30, 2000))
        b, c = (int(k) for k in rng.binomial(n // 10, 0.5, 2))
        ours = fixed_horizon_p(*arrays(n, c - b, b + c), metric="accuracy")[0]
        assert math.isclose(ours, paired.mcnemar(b, c), rel_tol=1e-9), (ours, b, c)
        d = rng.normal(0.1, 1, n)
        ours = fixed_horizon_p(*arrays(n, d.sum(), np.square(d).sum()), metric="mae")[0]
        assert math.isclose(ours, float(ttest_1samp(d, 0.0).pvalue), rel_tol=1e-7)


def arrays(*numbers: float) -> list[Floats]:
    return [np.array([x], dtype=float) for x in numbers]


def null_table(populations: list[Population], runs: int, seed: int) -> Iterator[str]:
    yield (
        "| population (roles swapped at random) | N (pairs) | tests | sequence: false winner "
        "| its upper 99 % bound | fixed-horizon, a look every 20: false winner "
        "| fixed-horizon, one look at N | Wilcoxon, one look at N "
        "| real pairs: truth ever outside the sequence | its upper 99 % bound |"
    )
    yield "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    within = True
    for i, pop in enumerate(populations):
        for pairs in NULL_PLANNED if pop.metric == "accuracy" else NULL_PLANNED[:1]:
            rng = np.random.default_rng(seed + 100 + 10 * i + (pairs > NULL_PLANNED[0]))
            block = max(1, BLOCK_ROWS // pairs)
            results = [
                null_block(pop, rng, min(block, runs - start), pairs)
                for start in range(0, runs, block)
            ]
            sequence, peeked, at_n, wilcoxon_at_n, real_missed = (
                np.concatenate([getattr(r, f.name) for r in results]) for f in fields(NullOutcome)
            )
            hits = int(sequence.sum())
            bound = upper_99(hits, runs)
            missed = int(real_missed.sum())
            missed_bound = upper_99(missed, runs)
            within &= bound <= ALPHA and missed_bound <= ALPHA
            test = "McNemar" if pop.metric == "accuracy" else "paired t"
            yield (
                f"| {pop.name} | {pairs:,} | {runs:,} | {hits / runs:.4f} | {bound:.4f} "
                f"| {test}: {peeked.mean():.3f} | {test}: {at_n.mean():.3f} "
                f"| {f'{wilcoxon_at_n.mean():.3f}' if pop.metric == 'mae' else '-'} "
                f"| {missed / runs:.4f} | {missed_bound:.4f} |"
            )
    yield ""
    yield f"Every bound within alpha: {'yes' if within else 'NO'}."


def run(runs: int, null_runs: int, seed: int) -> None:
    check_fixed_horizon_p()
    started = time.monotonic()
    lines: list[str] = []

    def emit(*more: str) -> None:  # print as it comes; save the same lines at the end
        print("\n".join(more), flush=True)
        lines.extend(more)

    def timed(what: str, make: Callable[[], list[Population]]) -> list[Population]:
        tick = time.monotonic()
        made = make()
        print(f"({what}: {time.monotonic() - tick:.0f} s)", flush=True)
        return made

    emit(
        f"`{shlex.join(['python', 'bench/shadow_simulation.py', *sys.argv[1:]])}`",
        f"alpha {ALPHA}, a look every {STEP} labels, MIN_COUNT {sequential.MIN_COUNT}, seed {seed}",
    )
    classifiers = timed("Adult models", adult_populations)
    regressors = timed("diabetes models", diabetes_populations)
    populations = classifiers + regressors
    emit("", "The populations (each test draws its labelled requests from these rows):", "")
    emit(*population_table(populations))
    emit("", "Power: labels each design needs to name the better shadow", "")
    for i, pop in enumerate(populations[:3]):  # the retrained regressor: too close to call
        emit(*power_tables(pop, runs, seed + i), "")
    emit(
        "False winners under peeking: equal models (roles swapped), a look every 20 pairs up "
        "to N; and the same rows unswapped: does the sequence cover the true mean d?",
        "",
    )
    emit(*null_table(populations, null_runs, seed))
    emit("", f"{time.monotonic() - started:.0f} s")
    save("shadow_simulation", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="tests per power scenario")
    parser.add_argument("--null-runs", type=int, default=10_000, help="tests per null row")
    parser.add_argument("--seed", type=int, default=2027)
    args = parser.parse_args()
    run(args.runs, args.null_runs, args.seed)


if __name__ == "__main__":
    main()
