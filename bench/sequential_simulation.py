"""The sequential mode of ab_simulation.py (``--sequential``): how often does watching a
test with the confidence sequence of apps/endpoints/experiments/sequential.py declare a
false winner, and what does it cost?

Unlike the service mode this does not go through Django: 10,000 tests of 4,000 feedbacks
each through the service would take hours. It simulates each arm's running count, sum and
sum of squares with numpy, many tests at once (in blocks, to bound memory), and computes
every look with ``sequential.sequence_bounds``, the function ``sequential.compare`` (the
service's) calls, so what is simulated is the production formula and decision rule
(MIN_COUNT included). Each test looks after every 20 feedbacks per arm, up to 2,000 per arm
(100 looks), with the mixture tuned for N = 4,000 (both arms):

- accuracy: each feedback is correct with the arm's true accuracy. Only sums matter, so the
  20 feedbacks between two looks are drawn at once as a binomial count (the same law);
- absolute errors: lognormal with log-sd 1 (skewness 6.2, standard deviation 1.31 times the
  mean), scaled so that the arm's mean absolute error is its truth. Real errors are skewed,
  and the sequence rests on a central limit theorem, so a skewed law is the harder test.

It reports, with equal arms, how often the sequence ever excluded 0 (a false winner; with
its upper 99 % Clopper-Pearson bound, which must stay under alpha) against the
fixed-horizon test (the service's two-proportion z-test, or Welch's t-test) looked at in
the same way and looked at once at N; with a real difference, how often each found the
better arm and how much feedback the sequence used before it stopped.
"""

from __future__ import annotations

import math
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
from scipy.stats import beta, norm
from scipy.stats import t as student

from common import REPO, save

sys.path.insert(0, str(REPO / "backend" / "server"))

from apps.endpoints.experiments import sequential, stats

ALPHA = 0.05
STEP = 20  # feedbacks per arm between two looks
LOOKS = 100  # up to 2,000 feedbacks per arm
PLANNED = 2 * STEP * LOOKS  # N, both arms together: 4,000
BLOCK = 500  # tests simulated at once: 2 x 500 x 2,000 lognormal draws, some 16 MB
LOG_SD = 1.0  # of the lognormal absolute errors
FEEDBACK = 2 * STEP * np.arange(1, LOOKS + 1)  # both arms together, at each look


@dataclass(frozen=True)
class Truth:
    metric: str  # "accuracy" (higher is better) or "mae" (lower is better)
    arm_1: float  # the true accuracy, or the true mean absolute error
    arm_2: float

    def describe(self) -> str:
        if self.metric == "accuracy":
            return f"accuracy {self.arm_1:.2f} / {self.arm_2:.2f}"
        lower = round(100 * (1 - self.arm_2 / self.arm_1))
        return f"MAE {self.arm_1:g} / {self.arm_2:g}" + (f" ({lower} % lower)" if lower else "")


EQUAL = [Truth("accuracy", 0.80, 0.80), Truth("mae", 10.0, 10.0)]
# Differences of 2, 5 and 10 points: accuracy points, and for the mean absolute error the
# same numbers as percent of the incumbent's MAE (and 20 %: with errors this skewed, 10 % is
# still hard to see in 4,000 feedbacks).
DIFFERENT = [Truth("accuracy", 0.80, 0.80 + gap) for gap in (0.02, 0.05, 0.10)] + [
    Truth("mae", 10.0, 10.0 * (1 - gap)) for gap in (0.02, 0.05, 0.10, 0.20)
]


Floats = npt.NDArray[np.float64]
Flags = npt.NDArray[np.bool_]


@dataclass
class Outcome:
    """Per simulated test."""

    sequence_stopped: Flags  # the sequence excluded 0 at some look
    sequence_right: Flags  # ...and the first such look named the better arm
    sequence_feedback: Floats  # both arms' feedback at that look (PLANNED if never)
    peeking_significant: Flags  # the fixed-horizon test: p < alpha at some look
    fixed_significant: Flags  # p < alpha at the last look alone (at N)
    fixed_right: Flags  # ...and the arm it found better was the better one


def arm_sums(truth: float, metric: str, rng: np.random.Generator, reps: int) -> Floats:
    """Running sum and sum of squares of one arm at each look, shape (2, reps, LOOKS)."""
    if metric == "accuracy":
        correct = rng.binomial(STEP, truth, (reps, LOOKS)).cumsum(axis=1).astype(float)
        return np.stack([correct, correct])
    # A lognormal's mean is exp(mu + sd^2 / 2): choose mu so that it is the true MAE.
    errors = rng.lognormal(math.log(truth) - LOG_SD**2 / 2, LOG_SD, (reps, LOOKS, STEP))
    return np.stack([errors.sum(axis=2).cumsum(axis=1), np.square(errors).sum(2).cumsum(1)])


def fixed_horizon_p(
    sum1: Floats, sumsq1: Floats, n1: Floats,
    sum2: Floats, sumsq2: Floats, n2: Floats, *, metric: str,
) -> Floats:  # fmt: skip
    """The p-value of the service's fixed-horizon test (stats.py), over arrays: the pooled
    two-proportion z-test, or Welch's t-test on the absolute errors."""
    mean_1, mean_2 = sum1 / n1, sum2 / n2
    if metric == "accuracy":
        pooled = (sum1 + sum2) / (n1 + n2)
        standard_error = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(standard_error > 0, (mean_2 - mean_1) / standard_error, 0.0)
        return np.asarray(np.minimum(1.0, 2 * norm.sf(np.abs(z))), dtype=float)
    share_1 = (sumsq1 - sum1 * mean_1) / (n1 - 1) / n1  # s1^2 / n1
    share_2 = (sumsq2 - sum2 * mean_2) / (n2 - 1) / n2
    standard_error = np.sqrt(share_1 + share_2)
    freedom = (share_1 + share_2) ** 2 / (share_1**2 / (n1 - 1) + share_2**2 / (n2 - 1))
    t = np.abs(mean_2 - mean_1) / standard_error
    return np.asarray(2 * student.sf(t, freedom), dtype=float)


def check_fixed_horizon_p() -> None:
    """The vectorised p-values above are the service's, on a few draws (else stop here)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        n1, n2 = (int(n) for n in rng.integers(40, 2000, 2))
        c1, c2 = (int(c) for c in rng.binomial([n1, n2], 0.8))
        ours = fixed_horizon_p(*arrays(c1, c1, n1, c2, c2, n2), metric="accuracy")[0]
        assert math.isclose(ours, stats.two_proportion_z_test(c1, n1, c2, n2), rel_tol=1e-9)
        e1, e2 = rng.lognormal(0, LOG_SD, n1), rng.lognormal(0.1, LOG_SD, n2)
        sums = [float(f(e)) for e in (e1, e2) for f in (np.sum, lambda e: np.sum(e * e))]
        ours = fixed_horizon_p(*arrays(sums[0], sums[1], n1, sums[2], sums[3], n2), metric="mae")[0]
        theirs = stats.welch_t_test(
            stats.ErrorSample(n1, sums[0], sums[1]), stats.ErrorSample(n2, sums[2], sums[3])
        )
        assert math.isclose(ours, theirs, rel_tol=1e-9), (ours, theirs)


def arrays(*numbers: float) -> list[Floats]:
    return [np.array([x], dtype=float) for x in numbers]


def simulate_block(truth: Truth, rng: np.random.Generator, reps: int) -> Outcome:
    sum1, sumsq1 = arm_sums(truth.arm_1, truth.metric, rng, reps)
    sum2, sumsq2 = arm_sums(truth.arm_2, truth.metric, rng, reps)
    counts = np.broadcast_to(STEP * np.arange(1, LOOKS + 1, dtype=float), (reps, LOOKS))
    look = sequential.sequence_bounds(
        sum1, sumsq1, counts, sum2, sumsq2, counts,
        bernoulli=truth.metric == "accuracy", alpha=ALPHA,
        rho2=sequential.rho_squared(ALPHA, PLANNED),
    )  # fmt: skip
    stopped: Flags = np.asarray(look.decided.any(axis=1), dtype=np.bool_)
    first = look.decided.argmax(axis=1)  # the first deciding look (0 if none: masked below)
    at_stop = look.estimate[np.arange(reps), first]
    # Arm 2 is the better one in every scenario with a difference; who is named at the stop:
    names_2 = at_stop > 0 if truth.metric == "accuracy" else at_stop < 0
    p = fixed_horizon_p(sum1, sumsq1, counts, sum2, sumsq2, counts, metric=truth.metric)
    ready = counts >= sequential.MIN_COUNT  # the same looks as the sequence's
    final_difference = sum2[:, -1] / counts[:, -1] - sum1[:, -1] / counts[:, -1]
    return Outcome(
        sequence_stopped=stopped,
        sequence_right=stopped & names_2,
        sequence_feedback=np.where(stopped, FEEDBACK[first], PLANNED),
        peeking_significant=np.asarray(((p < ALPHA) & ready).any(axis=1), dtype=np.bool_),
        fixed_significant=p[:, -1] < ALPHA,
        fixed_right=(p[:, -1] < ALPHA)
        & ((final_difference > 0) if truth.metric == "accuracy" else (final_difference < 0)),
    )


def simulate(truth: Truth, reps: int, seed: int) -> Outcome:
    rng = np.random.default_rng(seed)
    blocks = [simulate_block(truth, rng, size) for size in block_sizes(reps)]
    return Outcome(
        **{f.name: np.concatenate([getattr(b, f.name) for b in blocks]) for f in fields(Outcome)}
    )


def block_sizes(reps: int) -> Iterator[int]:
    for start in range(0, reps, BLOCK):
        yield min(BLOCK, reps - start)


def upper_99(hits: int, trials: int) -> float:
    """The one-sided upper 99 % Clopper-Pearson bound of a binomial proportion."""
    return 1.0 if hits == trials else float(beta.ppf(0.99, hits + 1, trials - hits))


def equal_arms_table(reps: int, seed: int) -> Iterator[str]:
    yield (
        "| metric | true arm 1 / arm 2 | tests | sequence: false winner | its upper 99 % bound "
        "| fixed-horizon, a look every 20: false winner | fixed-horizon, one look at N |"
    )
    yield "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    within = True
    for i, truth in enumerate(EQUAL):
        outcome = simulate(truth, reps, seed + i)
        hits = int(outcome.sequence_stopped.sum())
        bound = upper_99(hits, reps)
        within &= bound <= ALPHA
        yield (
            f"| {truth.metric} | {truth.describe()} | {reps:,} | {hits / reps:.4f} "
            f"| {bound:.4f} | {outcome.peeking_significant.mean():.3f} "
            f"| {outcome.fixed_significant.mean():.3f} |"
        )
    yield ""
    yield f"Every false-winner bound within alpha: {'yes' if within else 'NO'}."


def difference_table(reps: int, seed: int) -> Iterator[str]:
    yield (
        "| metric | true arm 1 / arm 2 | tests | sequence: right winner | wrong winner "
        "| feedback at stop (mean of stopped) | feedback used (mean, unstopped = N) "
        "| fixed-horizon at N: right winner |"
    )
    yield "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for i, truth in enumerate(DIFFERENT):
        outcome = simulate(truth, reps, seed + len(EQUAL) + i)
        stopped = outcome.sequence_stopped
        wrong = stopped & ~outcome.sequence_right
        at_stop = f"{outcome.sequence_feedback[stopped].mean():,.0f}" if stopped.any() else "-"
        yield (
            f"| {truth.metric} | {truth.describe()} | {reps:,} "
            f"| {outcome.sequence_right.mean():.3f} | {wrong.mean():.4f} | {at_stop} "
            f"| {outcome.sequence_feedback.mean():,.0f} | {outcome.fixed_right.mean():.3f} |"
        )


def width_table() -> Iterator[str]:
    """How much wider the sequence is than the fixed z interval, at n, when tuned for N."""
    plans = [400, sequential.DEFAULT_PLANNED, 4000, 20000]
    ns = [100, 400, 1000, 2000, 4000, 10000, 20000, 100000]
    z = norm.ppf(1 - ALPHA / 2)
    yield "| tuned for N \\ at n | " + " | ".join(f"{n:,}" for n in ns) + " |"
    yield "| --- |" + " ---: |" * len(ns)
    for planned in plans:
        rho2 = sequential.rho_squared(ALPHA, planned)
        ratios = [float(sequential.half_width(1.0, n, rho2, ALPHA)) * math.sqrt(n) / z for n in ns]
        yield f"| {planned:,} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |"
    ratios_at_n = ", ".join(
        f"{sequential.width_ratio(a):.4f} at alpha {a}" for a in (0.01, 0.05, 0.1)
    )
    yield ""
    yield f"At n = N the ratio depends on alpha alone: {ratios_at_n}."


def run(reps: int, seed: int) -> None:
    check_fixed_horizon_p()
    started = time.monotonic()
    lines: list[str] = []

    def emit(*more: str) -> None:  # print as it comes; save the same lines at the end
        print("\n".join(more), flush=True)
        lines.extend(more)

    emit(
        f"`{shlex.join(['python', 'bench/ab_simulation.py', *sys.argv[1:]])}`",
        f"alpha {ALPHA}, traffic 50/50, a look every {STEP} feedbacks per arm up to "
        f"{STEP * LOOKS:,} per arm ({LOOKS} looks), N = {PLANNED:,}, "
        f"MIN_COUNT {sequential.MIN_COUNT}, seed {seed}",
    )
    emit("", "Equal arms:", "")
    for line in equal_arms_table(reps, seed):
        emit(line)
    emit("", "A real difference (arm 2 better):", "")
    for line in difference_table(reps, seed):
        emit(line)
    emit("", "The sequence's width over the fixed interval's at n, tuned for N:", "")
    emit(*width_table())
    emit("", f"{time.monotonic() - started:.0f} s")
    save("ab_sequential", "\n".join(lines))
