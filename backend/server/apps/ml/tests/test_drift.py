"""Drift statistics (apps/ml/drift.py): the measures against scipy, profiles and codes on the
Adult data and scikit-learn's data sets, the fitted thresholds against a plain loop, and
assessments of windows at their edges and with one feature changed."""

from __future__ import annotations

import json
import math
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy, wasserstein_distance
from sklearn.datasets import load_diabetes

from apps.ml import drift
from apps.ml.drift import (
    ABOVE,
    ABSENT,
    BELOW,
    CATEGORICAL,
    INPUT,
    INVALID,
    MISSING,
    NUMERIC,
    OUTPUT,
    UNSEEN,
    FeatureProfile,
    Profile,
    Thresholds,
)
from apps.ml.income_classifier import schema
from apps.ml.tests.factories import adult_frame

Columns = dict[str, np.ndarray]
DASH = "\N{EN DASH}"  # between a bin's bounds


def columns_of(frame: pd.DataFrame) -> Columns:
    """Adult as the service hands it over: float64 numbers with NaN, stripped text with None."""
    out: Columns = {}
    for name in schema.FEATURES:
        if name in schema.NUMERIC_FEATURES:
            out[name] = frame[name].to_numpy(dtype=np.float64)
        else:
            values = frame[name].to_numpy(dtype=object, copy=True)
            values[frame[name].isna().to_numpy()] = None
            out[name] = values
    return out


def specs(columns: Columns) -> list[tuple[str, str, np.ndarray]]:
    return [
        (name, NUMERIC if name in schema.NUMERIC_FEATURES else CATEGORICAL, columns[name])
        for name in schema.FEATURES
    ]


@cache
def train() -> Columns:
    return columns_of(adult_frame("adult.data"))


@cache
def held_out() -> Columns:
    return columns_of(adult_frame("adult.test"))


@cache
def adult_profile() -> Profile:
    labels = adult_frame("adult.data")[schema.LABEL].to_numpy(dtype=object)
    return drift.build_profile(specs(train()), [("label", CATEGORICAL, labels)])


def window(columns: Columns, rows: int, seed: int = 0) -> Columns:
    taken = np.random.default_rng(seed).choice(len(columns["age"]), rows, replace=False)
    return {name: values[taken] for name, values in columns.items()}


def feature(profile: Profile, name: str, role: str = INPUT) -> FeatureProfile:
    return profile.features[profile.index(name, role)]


def drift_of(results: list[drift.FeatureDrift], name: str) -> drift.FeatureDrift:
    (found,) = [r for r in results if r.name == name]
    return found


# -- the measures against scipy ---------------------------------------------------------------


def random_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    pairs = []
    for k in (2, 3, 10, 41):
        for _ in range(5):
            r, c = rng.integers(0, 50, k), rng.integers(0, 5000, k)
            r[rng.random(k) < 0.3] = 0  # empty bins, on either side
            c[rng.random(k) < 0.3] = 0
            r[0] += 1  # not all empty
            c[-1] += 1
            pairs.append((r, c))
    return pairs


EDGE_CASES = [
    (np.array([10]), np.array([3])),  # one bin
    (np.array([1, 2, 3]), np.array([1, 2, 3])),  # identical
    (np.array([1, 2, 3]), np.array([10, 20, 30])),  # identical shares, different counts
    (np.array([5, 0, 0]), np.array([0, 0, 7])),  # disjoint
    (np.array([0, 9, 1]), np.array([4, 0, 6])),  # zeros on both sides
]


def smoothed(counts: np.ndarray) -> np.ndarray:
    shares = counts / counts.sum()
    return np.asarray((shares + drift.SMOOTHING) / (1 + len(counts) * drift.SMOOTHING))


@pytest.mark.parametrize("reference, current", random_pairs() + EDGE_CASES)
def test_psi_is_the_symmetrised_kl_divergence_of_the_smoothed_shares(
    reference: np.ndarray, current: np.ndarray
) -> None:
    r, c = smoothed(reference), smoothed(current)
    expected = entropy(c, r) + entropy(r, c)
    assert drift.psi(reference, current) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # Shares give what counts give.
    shares = drift.psi(reference / reference.sum(), current / current.sum())
    assert shares == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("reference, current", random_pairs() + EDGE_CASES)
def test_js_distance_is_scipys_in_base_2(reference: np.ndarray, current: np.ndarray) -> None:
    expected = jensenshannon(reference, current, base=2)
    assert drift.js_distance(reference, current) == pytest.approx(expected, rel=1e-9, abs=1e-7)
    assert 0 <= drift.js_distance(reference, current) <= 1


def test_the_measures_of_identical_disjoint_and_one_bin_distributions() -> None:
    assert drift.psi([1, 2, 3], [2, 4, 6]) == 0
    assert drift.js_distance([1, 2, 3], [2, 4, 6]) == 0
    assert drift.js_distance([1, 0], [0, 1]) == pytest.approx(1)
    assert drift.psi([7], [1]) == 0 and drift.js_distance([7], [1]) == 0
    # An empty bin costs a finite PSI thanks to the smoothing: ln(1 / 1e-4) at most.
    assert drift.psi([1, 0], [0, 1]) == pytest.approx(2 * math.log(1.0001 / 0.0001), rel=1e-3)


def diabetes_feature(name: str = "bmi") -> FeatureProfile:
    data = load_diabetes(as_frame=True).data
    profile = drift.build_profile([(name, NUMERIC, data[name].to_numpy())])
    return profile.features[0]


@pytest.mark.parametrize("name", ["bmi", "sex", "s4"])
def test_wasserstein_is_scipys_on_the_bin_centres_in_reference_standard_deviations(
    name: str,
) -> None:
    f = diabetes_feature(name)
    bounds = np.array([f.minimum, *f.edges, f.maximum])
    centres = (bounds[:-1] + bounds[1:]) / 2
    rng = np.random.default_rng(3)
    k = len(f.counts)
    cases = [(np.array(f.counts), rng.integers(0, 100, k)) for _ in range(10)]
    cases += [(np.array(f.counts), np.array(f.counts) * 3)]  # identical
    cases += [(np.eye(k, dtype=int)[0], np.eye(k, dtype=int)[-1])]  # all mass at each end
    assert f.std is not None
    for reference, current in cases:
        expected = wasserstein_distance(centres, centres, reference, current) / f.std
        assert drift.wasserstein(f, reference, current) == pytest.approx(expected, abs=1e-12)


def test_wasserstein_is_undefined_without_spread_and_zero_with_one_bin() -> None:
    constant = drift.build_profile([("x", NUMERIC, np.full(100, 3.0))]).features[0]
    assert constant.edges == (3.0,) and constant.std == 0
    assert drift.wasserstein(constant, constant.counts, [0, 5]) is None
    one_bin = FeatureProfile("x", NUMERIC, INPUT, 10, 0, counts=(10,), minimum=0, maximum=1, std=1)
    assert drift.wasserstein(one_bin, [10], [3]) == 0


def test_the_measures_refuse_an_empty_or_a_mismatched_distribution() -> None:
    with pytest.raises(ValueError, match="not all zero"):
        drift.psi([0, 0], [1, 2])
    with pytest.raises(ValueError, match="over 2 and 3 bins"):
        drift.js_distance([1, 2], [1, 2, 3])


# -- profiles -----------------------------------------------------------------------------------


def test_numeric_edges_are_the_reference_deciles() -> None:
    bmi = load_diabetes(as_frame=True).data["bmi"].to_numpy()
    f = diabetes_feature("bmi")
    assert f.edges == pytest.approx(np.quantile(bmi, np.arange(1, 10) / 10))
    assert len(f.counts) == 10 and sum(f.counts) == len(bmi) == f.rows
    assert f.minimum == bmi.min() and f.maximum == bmi.max()
    assert f.std == pytest.approx(bmi.std())  # population std (ddof 0)
    # Bin i is (edges[i-1], edges[i]]: each holds a tenth, give or take the ties.
    assert all(40 <= n <= 50 for n in f.counts)


def test_tied_deciles_make_one_edge_so_a_column_of_zeros_and_gains_has_two_bins() -> None:
    gains = train()["capital-gain"]
    assert (gains == 0).mean() > 0.9  # every decile is 0
    f = feature(adult_profile(), "capital-gain")
    assert f.edges == (0.0,)
    assert f.counts == ((gains == 0).sum(), (gains > 0).sum())
    assert f.labels() == ["≤ 0", "> 0"]
    # Education-num takes 16 values: its nine deciles fall on six of them.
    education = feature(adult_profile(), "education-num")
    assert education.edges == tuple(np.unique(education.edges)) and len(education.edges) == 5


def test_categories_are_kept_by_frequency_and_the_rarest_are_other() -> None:
    # 60 categories, "c00" the most frequent; "b" and "a" tie and are ordered by text.
    values = [f"c{i:02d}" for i in range(60) for _ in range(100 - i)] + ["b", "a"] * 200
    f = drift.build_profile([("x", CATEGORICAL, np.array(values, dtype=object))]).features[0]
    assert f.categories[:4] == ("a", "b", "c00", "c01")
    assert len(f.categories) == drift.MAX_CATEGORIES and not f.complete
    kept = f.categories[drift.MAX_CATEGORIES - 1]
    assert kept == "c47" and f.counts[-1] == sum(100 - i for i in range(48, 60))
    assert sum(f.counts) == len(values)
    assert f.labels()[-2:] == ["other", "unseen"]


def test_missing_values_are_counted_and_values_are_compared_as_text() -> None:
    profile = drift.build_profile(
        [
            ("n", NUMERIC, np.array([1.0, np.nan, 3.0, np.nan, 2.0])),
            ("c", CATEGORICAL, np.array([None, 1, "1", True, math.nan], dtype=object)),
        ]
    )
    n, c = profile.features
    assert (n.rows, n.missing, sum(n.counts)) == (5, 2, 3)
    assert (c.rows, c.missing) == (5, 2)
    assert dict(zip(c.categories, c.counts, strict=False)) == {"1": 2, "True": 1}
    assert c.complete


def test_adult_missing_values_are_those_of_the_files() -> None:
    profile = adult_profile()
    assert feature(profile, "workclass").missing == 1836
    assert feature(profile, "occupation").missing == 1843
    assert feature(profile, "native-country").missing == 583
    assert feature(profile, "age").missing == 0
    assert [f.role for f in profile.features] == [INPUT] * 14 + [OUTPUT]
    assert profile.index("label", OUTPUT) == 14 and profile.index("age") == 0
    with pytest.raises(KeyError, match="No output feature 'age'"):
        profile.index("age", OUTPUT)


def test_a_profile_round_trips_through_json_and_is_a_few_kilobytes() -> None:
    profile = adult_profile()
    text = json.dumps(profile.to_dict())
    again = Profile.from_dict(json.loads(text))
    assert again == profile
    assert hash(again.features[1]) == hash(profile.features[1])
    assert again.features[0].labels() == profile.features[0].labels()
    assert 2_000 < len(text) < 8_000, len(text)


def test_numeric_labels_are_compact_and_distinct() -> None:
    age = feature(adult_profile(), "age")
    assert age.labels()[0] == "≤ 22" and age.labels()[1] == f"22 {DASH} 26"
    assert age.labels()[-1].startswith("> ") and len(age.labels()) == len(age.counts)
    fnlwgt = feature(adult_profile(), "fnlwgt").labels()
    assert "e+" not in "".join(fnlwgt) and len(set(fnlwgt)) == 10
    close = FeatureProfile("x", NUMERIC, INPUT, 3, 0, counts=(1, 1, 1), edges=(0.12341, 0.12349))
    assert close.labels() == ["≤ 0.1234", f"0.1234 {DASH} 0.1235", "> 0.1235"]


def test_a_reference_with_an_infinite_value_or_columns_of_unequal_length_is_refused() -> None:
    with pytest.raises(ValueError, match="infinite"):
        drift.build_profile([("x", NUMERIC, np.array([1.0, np.inf]))])
    with pytest.raises(ValueError, match="differ in length"):
        drift.build_profile([("x", NUMERIC, np.ones(3)), ("y", NUMERIC, np.ones(4))])


# -- codes --------------------------------------------------------------------------------------


def small_profile(complete: bool = True) -> Profile:
    colours = ["red"] * 50 + ["green"] * 30 + ["blue"] * 20
    if not complete:  # 61 colours: the 11 rarest are "other"
        colours = ["red"] * 40 + [f"rare{i:02d}" for i in range(60)]
    return drift.build_profile(
        [
            ("x", NUMERIC, np.arange(1.0, 101.0)),  # edges 10.9, 20.8, ..., 90.1
            ("colour", CATEGORICAL, np.array(colours, dtype=object)),
        ],
        [("label", CATEGORICAL, np.array(["yes", "no"] * 50, dtype=object))],
    )


def test_each_special_code() -> None:
    profile = small_profile()
    x = feature(profile, "x")
    values: list[Any] = [np.nan, None, "12", True, 0.5, 1.0, x.edges[0], 50.0, 100.0, 100.5]
    colours: list[Any] = [None, math.nan, "red", "blue", "purple", ["red"], "red", "red", 1, "x"]
    codes = drift.encode(profile, {"x": np.array(values, dtype=object), "colour": colours})
    assert codes[:, 0].tolist() == [MISSING, MISSING, INVALID, INVALID, BELOW, 0, 0, 4, 9, ABOVE]
    assert codes[:, 1].tolist() == [MISSING, MISSING, 0, 2, UNSEEN, INVALID, 0, 0, UNSEEN, UNSEEN]
    assert (codes[:, 2] == ABSENT).all()  # no outputs given


def test_a_value_exactly_at_an_edge_belongs_to_the_bin_below_it() -> None:
    profile = small_profile()
    x = feature(profile, "x")
    at = np.array(x.edges)
    above = np.nextafter(at, np.inf)
    for values in (at, above):  # the vectorised path and the one for few rows alike
        for rows in (values[:1], np.tile(values, 3)):
            codes = drift.encode(profile, {"x": rows})[:, 0]
            expected = np.searchsorted(at, rows, side="left")
            assert codes.tolist() == expected.tolist()
    assert drift.encode(profile, {"x": at})[:, 0].tolist() == list(range(9))
    assert drift.encode(profile, {"x": above})[:, 0].tolist() == list(range(1, 10))


def test_a_value_outside_the_kept_categories_is_other_when_the_profile_is_not_complete() -> None:
    profile = small_profile(complete=False)
    colour = feature(profile, "colour")
    assert not colour.complete
    codes = drift.encode(profile, {"colour": ["purple", "red", None]})[:, 1]
    assert codes.tolist() == [len(colour.categories), colour.categories.index("red"), MISSING]


def test_features_not_given_are_absent_and_outputs_are_coded_when_given() -> None:
    profile = small_profile()
    codes = drift.encode(profile, {"colour": ["red", "green"]}, {"label": ["no", "maybe"]})
    assert codes[:, 0].tolist() == [ABSENT, ABSENT]
    assert codes[:, 2].tolist() == [
        feature(profile, "label", OUTPUT).categories.index("no"),
        UNSEEN,
    ]
    assert drift.encode(profile, {}, rows=3).tolist() == [[ABSENT] * 3] * 3
    with pytest.raises(ValueError, match="pass rows="):
        drift.encode(profile, {})
    with pytest.raises(ValueError, match="colour: 2 values for 3 rows"):
        drift.encode(profile, {"x": np.ones(3), "colour": ["red", "red"]})


def test_one_row_at_a_time_and_many_rows_at_once_give_the_same_codes() -> None:
    profile = adult_profile()
    columns = window(held_out(), 300, seed=1)
    # Some of every special value, in object columns as a refused request would give them.
    columns["age"] = columns["age"].astype(object)
    columns["age"][:5] = ["39", None, 10.0, 200.0, True]
    columns["workclass"][5:8] = ["Space-force", ["Private"], 3]
    labels = {"label": np.array([">50K", "<=50K", "?"] * 100, dtype=object)}
    many = drift.encode(profile, columns, labels)
    assert many.dtype == np.int16 and many.shape == (300, 15) and many.flags.c_contiguous
    one_by_one = np.vstack(
        [
            drift.encode(
                profile,
                {k: v[i : i + 1] for k, v in columns.items()},
                {k: v[i : i + 1] for k, v in labels.items()},
            )
            for i in range(300)
        ]
    )
    assert one_by_one.dtype == np.int16 and (one_by_one == many).all()
    assert many[:5, 0].tolist() == [INVALID, MISSING, BELOW, ABOVE, INVALID]
    assert many[5:8, 1].tolist() == [UNSEEN, INVALID, UNSEEN]


def test_coding_the_reference_and_counting_the_codes_gives_the_reference_counts() -> None:
    profile = adult_profile()
    labels = adult_frame("adult.data")[schema.LABEL].to_numpy(dtype=object)
    counts = drift.count(profile, drift.encode(profile, train(), {"label": labels}))
    for f, c in zip(profile.features, counts, strict=True):
        assert c.observed == f.rows and c.missing == f.missing, f.name
        assert c.invalid == c.unseen == c.out_of_range == 0, f.name
        assert tuple(c.bins) == f.counts + ((0,) if f.kind == CATEGORICAL else ()), f.name


def test_count_puts_out_of_range_values_in_the_outer_bins_and_refuses_foreign_codes() -> None:
    profile = small_profile()
    codes = drift.encode(profile, {"x": [0.0, 1.0, 100.0, 101.0, np.nan, "?"]}, {})
    x, colour, _ = drift.count(profile, codes)
    assert x.bins.tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert (x.out_of_range, x.missing, x.invalid, x.observed) == (2, 1, 1, 6)
    assert colour.observed == 0 and colour.bins.sum() == 0 and len(colour.bins) == 5
    with pytest.raises(ValueError, match="do not match a profile of 3 features"):
        drift.count(profile, codes[:, :2])
    foreign = codes.copy()
    foreign[0, 0] = 10
    with pytest.raises(ValueError, match="x: a code beyond its 10 bins"):
        drift.count(profile, foreign)


# -- fitted thresholds -----------------------------------------------------------------------


def scaled(f: FeatureProfile, factor: int) -> FeatureProfile:
    return FeatureProfile(
        f.name, f.kind, f.role, f.rows * factor, f.missing * factor,
        counts=tuple(n * factor for n in f.counts), edges=f.edges, minimum=f.minimum,
        maximum=f.maximum, std=f.std, categories=f.categories, complete=f.complete,
    )  # fmt: skip


def test_null_thresholds_are_deterministic_and_the_cache_hands_out_copies() -> None:
    f = feature(adult_profile(), "occupation")
    first = drift.null_thresholds(f, 4000)
    first["js"] = 99.0
    assert drift.null_thresholds(f, 4000) == drift.null_thresholds(f, 4000) != first
    assert drift.null_thresholds(f, 4000, seed=1) != drift.null_thresholds(f, 4000)
    assert set(first) == {"psi", "js"}
    assert set(drift.null_thresholds(feature(adult_profile(), "age"), 4000)) == {
        "psi",
        "wasserstein",
    }


def test_null_thresholds_are_wider_for_a_smaller_reference_or_window() -> None:
    for name in ("age", "native-country"):
        f = feature(adult_profile(), name)
        small = drift.null_thresholds(f, 5000)
        large = drift.null_thresholds(scaled(f, 10), 5000)
        smaller_window = drift.null_thresholds(f, 500)
        for measure in small:
            assert large[measure] < small[measure] < smaller_window[measure], (name, measure)


def test_null_thresholds_are_the_quantile_of_a_plain_loop_over_the_same_draws() -> None:
    for name, second in (("hours-per-week", "wasserstein"), ("native-country", "js")):
        f = feature(adult_profile(), name)
        window_size, simulations = 3000, 300
        reference = np.array(f.counts + ((0,) if f.kind == CATEGORICAL else ()), dtype=float)
        size = int(reference.sum())
        p = reference / size
        q = p.copy()
        if f.kind == CATEGORICAL:  # Good-Turing: the window's unseen share
            unseen = sum(n == 1 for n in f.counts[:-1]) / size
            q = np.append(p[:-1] * (1 - unseen), unseen)
        rng = np.random.default_rng(5)
        rs = [rng.multinomial(size, p) for _ in range(simulations)]
        cs = [rng.multinomial(window_size, q) for _ in range(simulations)]
        if f.kind == CATEGORICAL:  # a category the reference missed is unseen in the window
            for r, c in zip(rs, cs, strict=True):
                for i in range(len(f.categories)):
                    if r[i] == 0:
                        c[-1] += c[i]
                        c[i] = 0
        measures: dict[str, list[Any]] = {
            "psi": [drift.psi(r, c) for r, c in zip(rs, cs, strict=True)],
            second: [
                drift.js_distance(r, c) if second == "js" else drift.wasserstein(f, r, c)
                for r, c in zip(rs, cs, strict=True)
            ],
        }
        fitted = drift.null_thresholds(
            f, window_size, quantile=0.95, simulations=simulations, seed=5
        )
        assert set(fitted) == set(measures)
        for measure, values in measures.items():
            assert fitted[measure] == pytest.approx(np.quantile(values, 0.95), rel=1e-9)


def test_null_thresholds_are_empty_without_values_on_either_side() -> None:
    f = feature(adult_profile(), "age")
    assert drift.null_thresholds(f, 0) == {}
    empty = drift.build_profile([("x", NUMERIC, np.full(5, np.nan))]).features[0]
    assert drift.null_thresholds(empty, 100) == {}


# -- assessments --------------------------------------------------------------------------------


def assess(columns: Columns, **kwargs: Any) -> list[drift.FeatureDrift]:
    profile = adult_profile()
    return drift.assess(profile, drift.encode(profile, columns), **kwargs)


def test_an_empty_window_has_no_measures_and_no_flags() -> None:
    results = assess({name: values[:0] for name, values in held_out().items()})
    assert len(results) == 15
    for r in results:
        assert r.rows == 0 and not r.drifting
        assert set(r.measures.values()) == {None}
        assert r.shares["missing"] is None and r.shares["invalid"] is None
        assert sum(r.current) == 0 and sum(r.reference) == pytest.approx(1)
        json.dumps(r.to_dict())
    age = drift_of(results, "age")
    assert age.thresholds["psi"] == 0.2 and age.thresholds["wasserstein"] == 0.1


def test_one_row_is_measured_but_never_flagged() -> None:
    row = {name: values[:1] for name, values in held_out().items()}
    row["age"] = np.array([200.0])  # far above anything in the reference
    age = drift_of(assess(row), "age")
    assert age.rows == 1 and age.shares["out_of_range"] == 1.0
    assert age.measures["psi"] is not None and age.measures["psi"] > 1
    assert age.flags == ()


def test_flags_start_at_exactly_min_rows() -> None:
    columns = window(held_out(), 500)
    columns["age"] = columns["age"] + 20
    assert "psi" in drift_of(assess(columns), "age").flags
    fewer = {name: values[:499] for name, values in columns.items()}
    assert drift_of(assess(fewer), "age").flags == ()
    assert "psi" in drift_of(assess(fewer, thresholds=Thresholds(min_rows=499)), "age").flags


def test_an_unchanged_window_is_not_flagged_and_a_shifted_column_is() -> None:
    columns = window(held_out(), 5000)
    assert [r.name for r in assess(columns) if r.drifting] == []
    columns["age"] = columns["age"] + 10
    results = assess(columns)
    assert [r.name for r in results if r.drifting] == ["age"]
    age = drift_of(results, "age")
    assert {"psi", "wasserstein"} <= set(age.flags)
    assert age.measures["wasserstein"] == pytest.approx(10 / np.std(train()["age"]), rel=0.2)
    assert len(age.current) == len(age.reference) == len(feature(adult_profile(), "age").labels())


def test_an_unseen_category_in_30_percent_of_rows_is_flagged_as_unseen() -> None:
    columns = window(held_out(), 5000)
    rng = np.random.default_rng(0)
    columns["workclass"] = np.where(
        rng.random(5000) < 0.3, "Space-force", columns["workclass"]
    ).astype(object)
    workclass = drift_of(assess(columns), "workclass")
    assert "unseen" in workclass.flags and workclass.shares["unseen"] == pytest.approx(
        0.3, abs=0.02
    )
    assert workclass.current[-1] > 0.25 and workclass.reference[-1] == 0  # the unseen bin


def test_20_percent_more_missing_values_are_flagged_as_missing() -> None:
    columns = window(held_out(), 5000)
    occupation = columns["occupation"].copy()
    occupation[np.random.default_rng(0).random(5000) < 0.2] = None
    columns["occupation"] = occupation
    result = drift_of(assess(columns), "occupation")
    assert result.flags == ("missing",)
    missing, before = result.shares["missing"], result.shares["reference_missing"]
    assert missing is not None and before is not None and missing - before > 0.15


def test_invalid_and_out_of_range_values_are_flagged_past_their_floors() -> None:
    columns = window(held_out(), 1000)
    hours = columns["hours-per-week"].astype(object)
    hours[:100] = "forty"
    columns["hours-per-week"] = hours
    columns["capital-loss"] = columns["capital-loss"].copy()
    columns["capital-loss"][:60] = 10_000.0  # above the reference's maximum, 4,356
    results = assess(columns)
    assert drift_of(results, "hours-per-week").flags == ("invalid",)
    assert drift_of(results, "hours-per-week").shares["invalid"] == 0.1
    assert "out_of_range" in drift_of(results, "capital-loss").flags


def test_a_small_reference_raises_its_thresholds_above_the_floors() -> None:
    sample = window(train(), 500, seed=3)
    profile = drift.build_profile(specs(sample))
    codes = drift.encode(profile, window(train(), 5000, seed=4))
    fitted = drift_of(drift.assess(profile, codes), "native-country")
    floors = drift_of(drift.assess(profile, codes, fitted=False), "native-country")
    assert floors.thresholds["js"] == 0.1 and "js" in floors.flags  # a false alarm
    assert fitted.thresholds["js"] > 0.1 and not fitted.drifting
    # Below min_rows nothing can flag, and the floors are not raised.
    young = drift_of(drift.assess(profile, codes[:400]), "native-country")
    assert young.thresholds["js"] == 0.1 and young.flags == ()
    # A large reference keeps the floors.
    large = drift_of(assess(window(held_out(), 5000)), "native-country")
    assert large.thresholds["js"] == 0.1 and large.thresholds["psi"] == 0.2


def test_a_feature_observed_in_too_few_records_is_not_flagged() -> None:
    profile = adult_profile()
    codes = drift.encode(profile, window(held_out(), 600))  # no answers: labels ABSENT
    codes[:10, profile.index("label", OUTPUT)] = UNSEEN  # ten answers, all new
    label = drift.assess(profile, codes)[-1]
    assert label.rows == 10 and label.shares["unseen"] == 1.0 and label.flags == ()
