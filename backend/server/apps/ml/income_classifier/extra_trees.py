from apps.ml.income_classifier.base import IncomeClassifier


class ExtraTreesClassifier(IncomeClassifier):
    """The demo challenger model (``research/train.py`` writes its artifact)."""

    wrapper_key = "extra_trees"
    artifact_name = "extra_trees.joblib"
