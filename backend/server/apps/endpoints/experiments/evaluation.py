"""How good a model's answers are against the truth: one metric per task.

- Classifiers: accuracy, the share of answers equal to the true class.
- Regressors: mean absolute error, root mean squared error, and R² (1 - squared error over
  the truth's variance).

A batch upload with a target column gets them offline (``Running``, chunk by chunk); an
A/B test compares its arms on the same metric online (``ab_testing.py``, ``stats.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db.models import FloatField
from django.db.models.functions import Abs, Cast

from apps.ml.answer import ModelOutput
from apps.ml.signature import REGRESSION


def observation(response: str, feedback: str, *, regression: bool) -> float:
    """What one request with feedback tells an A/B test: a regressor's absolute error, or
    1 for a classifier's correct answer and 0 for a wrong one (compared as text, as the
    feedback tally and ``feedback_counts_by_scan`` compare)."""
    if regression:
        return abs(float(feedback) - float(response))
    return 1.0 if feedback == response else 0.0


@dataclass
class Running:
    """Sums that give the metrics of a whole file, added one chunk at a time."""

    labelled: int = 0
    correct: int = 0
    absolute: float = 0.0  # sum |prediction - truth|
    squared: float = 0.0  # sum (prediction - truth)^2
    truth: float = 0.0  # sum truth
    truth_squared: float = 0.0  # sum truth^2

    def add(self, task: str, truths: Sequence[str | None], output: ModelOutput) -> None:
        """Count the rows of a chunk that have a truth (``None``: no value in the file)."""
        given = np.array([t is not None for t in truths], dtype=bool)
        if not given.any():
            return
        self.labelled += int(given.sum())
        if task == REGRESSION:
            assert output.values is not None
            truth = np.array([float(t) for t in truths if t is not None])
            errors = output.values[given] - truth
            self.absolute += float(np.abs(errors).sum())
            self.squared += float((errors**2).sum())
            self.truth += float(truth.sum())
            self.truth_squared += float((truth**2).sum())
        else:
            assert output.labels is not None
            self.correct += sum(
                truth == label
                for truth, label in zip(truths, output.labels.tolist(), strict=True)
                if truth is not None
            )

    def summary(self, task: str) -> dict[str, Any]:
        """``{"labelled", "accuracy"}`` for a classifier, ``{"labelled", "mae", "rmse",
        "r2"}`` for a regressor; the metrics are None without any truth."""
        n = self.labelled
        if task != REGRESSION:
            return {"labelled": n, "accuracy": self.correct / n if n else None}
        if not n:
            return {"labelled": 0, "mae": None, "rmse": None, "r2": None}
        variance = self.truth_squared - self.truth**2 / n
        return {
            "labelled": n,
            "mae": self.absolute / n,
            "rmse": math.sqrt(self.squared / n),
            "r2": 1 - self.squared / variance if variance > 0 else None,
        }


def absolute_error(prefix: str = "") -> Abs:
    """|feedback - response| of a logged request, in SQL (``prefix``: the path to it, e.g.
    ``requests__``): a regressor's prediction and its feedback are numbers stored as text
    (``serving/feedback.py``). What the A/B reports and the feedback scan add up."""
    return Abs(Cast(f"{prefix}feedback", FloatField()) - Cast(f"{prefix}response", FloatField()))
