"""The Adult census income classifier: its data set's schema, the preprocessing fitted in
training, and ``IncomeClassifier``, the runtime that serves its bundles (``kinds/adult.py``
is the kind that registers and loads them)."""

from apps.ml.income_classifier.base import IncomeClassifier

__all__ = ["IncomeClassifier"]
