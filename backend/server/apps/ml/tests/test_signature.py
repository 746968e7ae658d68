"""Signatures inferred from real models (trained here on scikit-learn's data sets)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestClassifier
from sklearn.multioutput import MultiOutputClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from apps.core.errors import ModelRejected
from apps.ml import signature
from apps.ml.signature import Feature, Signature
from apps.ml.tests import models


def test_a_pipeline_fitted_on_a_frame_takes_its_columns_as_numbers() -> None:
    x, _ = models.wine()
    inferred = signature.infer(models.wine_classifier(), x.head(5))
    assert inferred.names == tuple(x.columns)
    assert {f.type for f in inferred.features} == {"number"}
    assert all(f.required for f in inferred.features)
    assert inferred.task == "classification"
    assert inferred.classes == ("barbera", "barolo", "grignolino")
    assert inferred.outputs == ("label", "probabilities", "status")  # three classes


def test_the_encoders_say_which_features_are_categories_and_the_example_which_are_optional() -> (
    None
):
    frame, _ = models.mixed_frame()
    inferred = signature.infer(models.mixed_classifier(), frame)
    colour = inferred.feature("colour")
    assert colour is not None and colour.type == "category"
    assert colour.categories == ("red", "rose", "white") and colour.unknown == "error"
    organic, hue = inferred.feature("organic"), inferred.feature("hue")
    assert organic is not None and organic.type == "boolean"
    assert hue is not None and hue.type == "number" and not hue.required  # gaps in the example
    alcohol = inferred.feature("alcohol")
    assert alcohol is not None and alcohol.required
    lenient = signature.infer(models.mixed_classifier("ignore"), frame).feature("colour")
    assert lenient is not None and lenient.unknown == "accept"


def test_without_an_example_every_feature_is_a_required_number() -> None:
    inferred = signature.infer(models.ridge_on_arrays())
    assert inferred.names == tuple(f"x{i}" for i in range(10))
    assert all(f.type == "number" and f.required for f in inferred.features)
    assert inferred.task == "regression" and inferred.outputs == ("prediction", "status")


def test_a_binary_classifier_answers_the_positive_class_probability() -> None:
    x, _ = models.cancer()
    inferred = signature.infer(models.cancer_classifier(), x.head(3))
    assert inferred.classes == ("0", "1") and inferred.positive_class == "1"
    assert inferred.outputs == ("label", "probability", "probabilities", "status")


def test_a_classifier_without_predict_proba_answers_labels_only() -> None:
    x, y = models.cancer()
    model = LinearSVC().fit(StandardScaler().fit_transform(x), y)
    assert signature.infer(model).outputs == ("label", "status")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (KMeans(n_clusters=2, n_init=1), "neither a classifier nor a regressor"),
        (StandardScaler(), "no predict"),
        ("model", "no predict"),
    ],
)
def test_what_is_not_a_classifier_or_regressor_is_refused(model: object, message: str) -> None:
    x, _ = models.wine()
    if hasattr(model, "fit"):
        model.fit(x)
    with pytest.raises(ModelRejected, match=message):
        signature.infer(model)


def test_multi_output_classifiers_are_refused() -> None:
    x, y = models.cancer()
    both = np.column_stack([y, 1 - y])
    model = MultiOutputClassifier(RandomForestClassifier(n_estimators=3)).fit(x, both)
    with pytest.raises(ModelRejected, match="one target only"):
        signature.infer(model)


def test_an_example_must_have_the_models_columns() -> None:
    x, _ = models.wine()
    with pytest.raises(ModelRejected, match="lacks the model's feature"):
        signature.infer(models.wine_classifier(), x.drop(columns=["alcohol"]).head(3))
    with pytest.raises(ModelRejected, match="has 9 columns"):
        signature.infer(models.ridge_on_arrays(), pd.DataFrame(np.zeros((2, 9))))


def test_a_signature_survives_the_catalogue() -> None:
    frame, _ = models.mixed_frame()
    inferred = signature.infer(models.mixed_classifier(), frame)
    card = inferred.card()
    assert Signature.from_card(**card) == inferred


def test_generated_rows_hold_valid_values_of_every_type() -> None:
    sig = Signature(
        features=(
            Feature("n", "number"),
            Feature("c", "category", categories=("a", "b")),
            Feature("b", "boolean"),
            Feature("s", "string"),
        ),
        task="regression",
    )
    rows = signature.generated_rows(sig, 5, seed=1)
    assert rows[0]["n"] == 0.0 and {r["c"] for r in rows} <= {"a", "b"}
    assert {r["b"] for r in rows} == {True, False} and all(isinstance(r["s"], str) for r in rows)
