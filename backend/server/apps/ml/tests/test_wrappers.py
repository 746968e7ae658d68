"""The demo classifiers, trained for real (research/train.py) once per test session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from apps.ml.income_classifier import IncomeClassifier, schema
from apps.ml.tests.factories import SAMPLE_RECORD, adult_frame


@pytest.fixture(scope="module", params=["random_forest.joblib", "extra_trees.joblib"])
def wrapper(request: pytest.FixtureRequest, demo_artifacts: Path) -> IncomeClassifier:
    return IncomeClassifier.from_artifact(demo_artifacts, request.param)


def test_the_tutorial_sample_record_is_labelled_below_50k(wrapper: IncomeClassifier) -> None:
    prediction = wrapper.compute_prediction(SAMPLE_RECORD)
    assert prediction["label"] == "<=50K"
    assert prediction["status"] == "OK"
    assert type(prediction["probability"]) is float
    assert 0.0 <= prediction["probability"] <= 0.5
    assert prediction["imputed"] == []


def test_a_batch_equals_the_records_one_by_one(wrapper: IncomeClassifier) -> None:
    frame = adult_frame("adult.test").head(50)
    records = json.loads(frame.drop(columns=[schema.LABEL]).to_json(orient="records"))
    batch = wrapper.compute_predictions(records)
    singles = [wrapper.compute_prediction(r) for r in records]
    assert batch == singles


def test_labels_agree_with_the_estimators_own_predict(wrapper: IncomeClassifier) -> None:
    frame = adult_frame("adult.test").head(500)
    records = json.loads(frame.drop(columns=[schema.LABEL]).to_json(orient="records"))
    labels = [p["label"] for p in wrapper.compute_predictions(records)]
    expected = wrapper.estimator.predict(wrapper.preprocessing.encode_frame(frame))
    assert labels == [schema.CLASSES[i] for i in expected]


def test_accuracy_on_adult_test_is_what_training_reported(wrapper: IncomeClassifier) -> None:
    frame = adult_frame("adult.test")
    probabilities = wrapper.predict_proba(wrapper.preprocessing.encode_frame(frame))
    accuracy = np.mean((probabilities > 0.5) == (frame[schema.LABEL] == schema.POSITIVE_LABEL))
    assert accuracy == pytest.approx(wrapper.metrics["accuracy_adult_test"], abs=1e-4)
    assert accuracy > 0.84


def test_every_domain_value_of_every_category_is_served(wrapper: IncomeClassifier) -> None:
    for feature, domain in schema.CATEGORY_DOMAINS.items():
        records = [dict(SAMPLE_RECORD, **{feature: value}) for value in domain]
        assert len(wrapper.compute_predictions(records)) == len(domain)


def test_holand_netherlands_unseen_in_training_does_not_crash(tiny_artifacts: Path) -> None:
    tiny = IncomeClassifier.from_artifact(tiny_artifacts, "random_forest.joblib")
    assert "Holand-Netherlands" not in tiny.preprocessing.categories["native-country"]
    prediction = tiny.compute_prediction(
        dict(SAMPLE_RECORD, **{"native-country": "Holand-Netherlands"})
    )
    assert prediction["imputed"] == ["native-country"]
    assert prediction["label"] in schema.CLASSES
