"""Income classifier wrappers, by the key recorded in ``MLAlgorithm.wrapper``.

The registry only ever instantiates a class from this table: a database row cannot make
the service import arbitrary code.
"""

from apps.ml.income_classifier.base import IncomeClassifier
from apps.ml.income_classifier.extra_trees import ExtraTreesClassifier
from apps.ml.income_classifier.random_forest import RandomForestClassifier

WRAPPERS: dict[str, type[IncomeClassifier]] = {
    cls.wrapper_key: cls for cls in (IncomeClassifier, RandomForestClassifier, ExtraTreesClassifier)
}

__all__ = ["WRAPPERS", "ExtraTreesClassifier", "IncomeClassifier", "RandomForestClassifier"]
