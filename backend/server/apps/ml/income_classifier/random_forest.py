from apps.ml.income_classifier.base import IncomeClassifier


class RandomForestClassifier(IncomeClassifier):
    """The demo production model (``research/train.py`` writes its artifact)."""

    wrapper_key = "random_forest"
    artifact_name = "random_forest.joblib"
