"""The demo models every fresh install serves (``research/train.py`` writes their files)."""

from __future__ import annotations

from apps.endpoints.models import MLAlgorithmStatus
from apps.ml.income_classifier import ExtraTreesClassifier, RandomForestClassifier
from apps.ml.registry import AlgorithmSpec

ENDPOINT = "income_classifier"

DEMO_MODELS = (
    AlgorithmSpec(
        endpoint_name=ENDPOINT,
        wrapper=RandomForestClassifier,
        name="random forest",
        version="0.0.1",
        status=MLAlgorithmStatus.Status.PRODUCTION,
        owner="ML_PipeLine",
        description="Random forest (100 trees, min 10 samples a leaf) on Adult census data.",
    ),
    AlgorithmSpec(
        endpoint_name=ENDPOINT,
        wrapper=ExtraTreesClassifier,
        name="extra trees",
        version="0.0.1",
        status=MLAlgorithmStatus.Status.TESTING,
        owner="ML_PipeLine",
        description="Extra trees (100 trees, min 5 samples a leaf) on Adult census data.",
    ),
)
