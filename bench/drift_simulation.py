"""How often does drift monitoring (apps/ml/drift.py) flag a feature when nothing changed,
and does it flag the feature that did? A seeded simulation on the Adult data, through the
service's own functions (build_profile, encode, assess), without Django.

- (a) False alarms, large reference: the profile of the training split (32,561 rows);
  windows of 5,000 rows resampled with replacement from the same rows.
- (b) False alarms, small reference: the profile of a random 500-row sample of the
  training split; windows resampled from the whole split. Each of ``--references`` samples
  is watched for ``--windows / --references`` windows: one reference's windows share its
  sampling error, so the rate is an average over references (the worst one is shown too).
- (c) Detection: the training split's profile; windows of 5,000 rows drawn from the test
  split, unchanged or with one feature changed.
- (d) Costs: encode for 1 to 100,000 rows, count, and assess with and without its
  fitted thresholds memoised.

(a) and (b) are run twice: with the floors only (``assess(..., fitted=False)``), and with
the floors raised to the thresholds fitted to the reference (the default). A window's
codes are rows of the split's codes: coding a row does not depend on the other rows, so
resampling codes is resampling records. The service's 14 Adult features (all columns but
the label, schema.FEATURES) are watched; the model's output is not (no model is run).

    python bench/drift_simulation.py [--windows 2000] [--references 1000] [--seed 0]
        [--quantile 0.999] [--simulations 2000] [--scenarios abcd]
"""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from common import REPO, log, save

sys.path.insert(0, str(REPO / "backend" / "server"))
sys.path.insert(0, str(REPO / "research"))

import adult
from adult import schema
from apps.ml import drift

WINDOW = 5_000
SMALL_REFERENCE = 500
Columns = dict[str, np.ndarray]


def columns_of(frame: pd.DataFrame) -> Columns:
    """The features as the service hands them to drift.py: float64 numbers (NaN missing),
    categories as stripped text in object arrays (None missing)."""
    out: Columns = {}
    for name in schema.FEATURES:
        if name in schema.NUMERIC_FEATURES:
            out[name] = frame[name].to_numpy(dtype=np.float64)
        else:
            values = frame[name].to_numpy(dtype=object, copy=True)
            values[frame[name].isna().to_numpy()] = None
            out[name] = values
    return out


def profile_of(columns: Columns) -> drift.Profile:
    kinds = {name: drift.NUMERIC for name in schema.NUMERIC_FEATURES}
    return drift.build_profile(
        [(name, kinds.get(name, drift.CATEGORICAL), columns[name]) for name in schema.FEATURES]
    )


def take(columns: Columns, rows: np.ndarray) -> Columns:
    return {name: values[rows] for name, values in columns.items()}


ANY = "any feature"  # a window with a flag on some feature


@dataclass
class Tally:
    """Flags per feature over windows: any flag, and by which measure or share."""

    windows: int = 0
    flagged: Counter[str] = field(default_factory=Counter)
    by: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, results: Sequence[drift.FeatureDrift]) -> None:
        self.windows += 1
        self.flagged[ANY] += any(r.drifting for r in results)
        for r in results:
            self.flagged[r.name] += r.drifting
            for flag in r.flags:
                self.by[(r.name, flag)] += 1

    def merge(self, other: Tally) -> None:
        self.windows += other.windows
        self.flagged.update(other.flagged)
        self.by.update(other.by)

    def rate(self, name: str) -> float:
        return self.flagged[name] / max(self.windows, 1)

    def cell(self, name: str) -> str:
        measures = sorted(((n, m) for (f, m), n in self.by.items() if f == name), reverse=True)
        detail = ", ".join(f"{m} {percent(n / self.windows)}" for n, m in measures)
        return percent(self.rate(name)) + (f" ({detail})" if detail else "")


def percent(share: float) -> str:
    return f"{100 * share:.1f} %"


def false_alarms(
    profile: drift.Profile,
    codes: np.ndarray,
    windows: int,
    rng: np.random.Generator,
    thresholds: drift.Thresholds,
) -> tuple[Tally, Tally]:
    """Windows resampled from ``codes``, assessed with the floors only and with fitted
    thresholds (the same windows for both)."""
    floors, fitted = Tally(), Tally()
    for _ in range(windows):
        window = codes[rng.integers(0, len(codes), WINDOW)]
        floors.add(drift.assess(profile, window, thresholds, fitted=False))
        fitted.add(drift.assess(profile, window, thresholds))
    return floors, fitted


def fitted_of(profile: drift.Profile, name: str, thresholds: drift.Thresholds) -> dict[str, float]:
    """The fitted thresholds of a full window's measures (missing values excluded)."""
    f = profile.features[profile.index(name)]
    share_present = 1 - f.missing / f.rows if f.rows else 1.0
    return drift.null_thresholds(
        f,
        round(WINDOW * share_present),
        quantile=thresholds.quantile,
        simulations=thresholds.simulations,
    )


def fitted_cell(profile: drift.Profile, name: str, thresholds: drift.Thresholds) -> str:
    return ", ".join(f"{m} {v:.3f}" for m, v in fitted_of(profile, name, thresholds).items())


def scenario_a(train: Columns, args: argparse.Namespace, thresholds: drift.Thresholds) -> str:
    profile = profile_of(train)
    codes = drift.encode(profile, train)
    floors, fitted = false_alarms(
        profile, codes, args.windows, np.random.default_rng(args.seed), thresholds
    )
    lines = [
        f"(a) reference: the training split ({len(codes):,} rows); {args.windows:,} windows "
        f"of {WINDOW:,} rows resampled from it. Flag rate per feature (by measure):",
        "",
        "| feature | floors only | floors + fitted | fitted thresholds (a full window) |",
        "| --- | ---: | ---: | --- |",
    ]
    for name in schema.FEATURES:
        lines.append(
            f"| {name} | {floors.cell(name)} | {fitted.cell(name)} "
            f"| {fitted_cell(profile, name, thresholds)} |"
        )
    lines.append(f"| {ANY} | {floors.cell(ANY)} | {fitted.cell(ANY)} | |")
    return "\n".join(lines)


def scenario_b(train: Columns, args: argparse.Namespace, thresholds: drift.Thresholds) -> str:
    rng = np.random.default_rng(args.seed + 1)
    per_reference = max(1, args.windows // args.references)
    floors, fitted = Tally(), Tally()
    ever: Counter[str] = Counter()  # references with a flag in any of their windows
    fitted_thresholds: dict[tuple[str, str], list[float]] = {}
    rows = len(train["age"])
    for _ in range(args.references):
        sample = take(train, rng.choice(rows, SMALL_REFERENCE, replace=False))
        profile = profile_of(sample)
        codes = drift.encode(profile, train)
        a, b = false_alarms(profile, codes, per_reference, rng, thresholds)
        floors.merge(a)
        fitted.merge(b)
        ever.update(name for name in (*schema.FEATURES, ANY) if b.rate(name) > 0)
        for name in schema.FEATURES:
            for measure, value in fitted_of(profile, name, thresholds).items():
                fitted_thresholds.setdefault((name, measure), []).append(value)
    lines = [
        f"(b) reference: a random {SMALL_REFERENCE}-row sample of the training split, "
        f"{args.references} such samples; {per_reference} windows of {WINDOW:,} rows each, "
        f"resampled from the whole split ({floors.windows:,} windows). Flag rate per feature "
        "(by measure):",
        "",
        "| feature | floors only | floors + fitted | floors + fitted: references ever flagged "
        "| fitted thresholds (a full window): median, 5 %-95 % of references |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name in (*schema.FEATURES, ANY):
        share = percent(ever[name] / args.references)
        spread = ", ".join(
            f"{measure} {np.median(v):.3f} ({np.quantile(v, 0.05):.3f}-{np.quantile(v, 0.95):.3f})"
            for (feature, measure), v in fitted_thresholds.items()
            if feature == name
        )
        lines.append(f"| {name} | {floors.cell(name)} | {fitted.cell(name)} | {share} | {spread} |")
    return "\n".join(lines)


def with_unseen(values: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    out = values.copy()
    out[rng.random(len(out)) < share] = "Space-force"  # in no reference
    return out


def with_missing(values: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    out = values.copy()
    out[rng.random(len(out)) < share] = None
    return out


Change = Callable[[Columns, np.random.Generator], None]
CHANGES: list[tuple[str, str | None, Change]] = [
    ("none", None, lambda c, rng: None),
    ("age + 10 years", "age", lambda c, rng: c.update(age=c["age"] + 10)),
    (
        "hours-per-week x 1.5",
        "hours-per-week",
        lambda c, rng: c.update({"hours-per-week": c["hours-per-week"] * 1.5}),
    ),
    (
        "workclass: 30 % an unseen value",
        "workclass",
        lambda c, rng: c.update(workclass=with_unseen(c["workclass"], 0.3, rng)),
    ),
    (
        "occupation: missing in 20 % more rows",
        "occupation",
        lambda c, rng: c.update(occupation=with_missing(c["occupation"], 0.2, rng)),
    ),
]


def scenario_c(
    train: Columns, test: Columns, args: argparse.Namespace, thresholds: drift.Thresholds
) -> str:
    profile = profile_of(train)
    rng = np.random.default_rng(args.seed + 2)
    windows = max(1, args.windows // 10)
    rows = len(test["age"])
    lines = [
        f"(c) reference: the training split; {windows} windows of {WINDOW:,} rows drawn "
        f"(without replacement) from the test split ({rows:,} rows), then changed. Floors + "
        "fitted thresholds. The features flagged, in how many windows (by measure):",
        "",
        "| change | the changed feature | any other feature |",
        "| --- | --- | --- |",
    ]
    for label, changed, change in CHANGES:
        tally = Tally()
        for _ in range(windows):
            window = take(test, rng.choice(rows, WINDOW, replace=False))
            change(window, rng)
            tally.add(drift.assess(profile, drift.encode(profile, window), thresholds))
        others = [n for n in schema.FEATURES if n != changed and tally.rate(n) > 0]
        mine = f"{changed}: {tally.cell(changed)}" if changed else "-"
        other = "; ".join(f"{n}: {tally.cell(n)}" for n in others) or "none"
        lines.append(f"| {label} | {mine} | {other} |")
    return "\n".join(lines)


def best_of(call: Callable[[], object], number: int, repeat: int = 7) -> float:
    """Seconds per call, the best of ``repeat`` rounds of ``number`` calls."""
    rounds = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            call()
        rounds.append((time.perf_counter() - started) / number)
    return min(rounds)


def costs(train: Columns, test: Columns) -> str:
    """What drift.py costs: encode in the request path (the Adult inputs as the service's
    Frame holds them, and a label, alternating classes), count and assess when a window is
    reported."""
    labels = np.array(["<=50K", ">50K"], dtype=object)
    profile = drift.build_profile(
        [(n, drift.NUMERIC if n in schema.NUMERIC_FEATURES else drift.CATEGORICAL, train[n])
         for n in schema.FEATURES],
        [("label", drift.CATEGORICAL, labels[np.arange(len(train["age"])) % 2])],
    )  # fmt: skip
    rows = np.random.default_rng(0).integers(0, len(test["age"]), 100_000)
    lines = [
        "(d) costs, on this machine (best of 7 rounds): the Adult profile's 14 inputs and "
        "the label; windows drawn from the test split.",
        "",
        "| call | time |",
        "| --- | ---: |",
    ]
    for n, number in ((1, 20_000), (32, 1_000), (100, 300), (10_000, 5), (100_000, 1)):
        columns = take(test, rows[:n])
        outputs = {"label": labels[np.arange(n) % 2]}
        cost = best_of(functools.partial(drift.encode, profile, columns, outputs), number)
        lines.append(f"| encode, {n:,} row{'s' if n > 1 else ''} | {duration(cost)} |")
    codes = drift.encode(profile, take(test, rows), {"label": labels[np.arange(100_000) % 2]})
    lines.append(
        f"| count, 100,000 rows | {duration(best_of(lambda: drift.count(profile, codes), 3))} |"
    )
    window = codes[:WINDOW]
    drift._null_thresholds.cache_clear()  # the first report of a version simulates
    started = time.perf_counter()
    drift.assess(profile, window)
    lines.append(
        f"| assess, {WINDOW:,} rows, first call | {duration(time.perf_counter() - started)} |"
    )
    cost = best_of(lambda: drift.assess(profile, window), 20)
    lines.append(f"| assess, {WINDOW:,} rows, thresholds memoised | {duration(cost)} |")
    return "\n".join(lines)


def duration(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.1f} ms"


def report(args: argparse.Namespace) -> Iterator[str]:
    thresholds = drift.Thresholds(quantile=args.quantile, simulations=args.simulations)
    train = columns_of(adult.load_split("adult.data"))
    test = columns_of(adult.load_split("adult.test"))
    command = shlex.join(["python", "bench/drift_simulation.py", *sys.argv[1:]])
    yield (
        f"`{command}` ({time.strftime('%Y-%m-%d')}, seed {args.seed}; windows of {WINDOW:,} "
        f"rows, min_rows {thresholds.min_rows}, floors {floors_text(thresholds)}; fitted: the "
        f"{thresholds.quantile:g} quantile of {thresholds.simulations} simulations)"
    )
    scenarios: list[tuple[str, Callable[[], str]]] = [
        ("a", lambda: scenario_a(train, args, thresholds)),
        ("b", lambda: scenario_b(train, args, thresholds)),
        ("c", lambda: scenario_c(train, test, args, thresholds)),
        ("d", lambda: costs(train, test)),
    ]
    for name, run in scenarios:
        if name not in args.scenarios:
            continue
        started = time.perf_counter()
        log(f"scenario ({name})")
        table = run()
        log(f"scenario ({name}) took {time.perf_counter() - started:.0f} s")
        yield ""
        yield table


def floors_text(t: drift.Thresholds) -> str:
    return (
        f"PSI {t.psi:g}, Wasserstein {t.wasserstein:g} std, JS {t.js:g}, unseen {t.unseen:g}, "
        f"invalid {t.invalid:g}, out of range {t.out_of_range:g}, missing +{t.missing_points:g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=2000, help="per false-alarm scenario")
    parser.add_argument("--references", type=int, default=1000, help="small references in (b)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", default="abcd", help="which to run: abcd, or b...")
    parser.add_argument("--quantile", type=float, default=drift.Thresholds().quantile)
    parser.add_argument("--simulations", type=int, default=drift.Thresholds().simulations)
    args = parser.parse_args()
    started = time.perf_counter()
    lines = list(report(args))
    lines.append("")
    lines.append(f"(the run took {time.perf_counter() - started:.0f} s)")
    text = "\n".join(lines)
    print(text)
    save("drift_simulation", text)


if __name__ == "__main__":
    main()
