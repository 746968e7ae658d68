"""The training script shows progress on its long steps."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from train import fit_with_progress


def test_a_forest_reports_its_trees_as_they_grow_and_ends_as_one_fit_would(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 4)), rng.integers(0, 2, 200)
    grown = fit_with_progress(RandomForestClassifier(n_estimators=10, random_state=3), x, y, "rf")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[1].split(" trees")[0] for line in lines] == [
        "2/10",
        "4/10",
        "6/10",
        "8/10",
        "10/10",
    ]
    once = RandomForestClassifier(n_estimators=10, random_state=3).fit(x, y)
    assert np.array_equal(grown.predict_proba(x), once.predict_proba(x))
    assert grown.get_params()["warm_start"] is False


def test_a_model_without_trees_is_fitted_in_one_call(capsys: pytest.CaptureFixture[str]) -> None:
    x, y = np.eye(4), np.array([0, 1, 0, 1])
    fit_with_progress(LogisticRegression(), x, y, "lr")
    assert capsys.readouterr().out == ""
