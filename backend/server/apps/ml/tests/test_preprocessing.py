"""Validation and encoding of records (no database, no full models)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from apps.core.errors import InvalidInput
from apps.ml.income_classifier import schema
from apps.ml.income_classifier.preprocessing import Preprocessing
from apps.ml.tests.factories import SAMPLE_RECORD, adult_frame


@pytest.fixture(scope="module")
def prep() -> Preprocessing:
    return Preprocessing.fit(adult_frame())


def errors_for(prep: Preprocessing, record: Any) -> dict[str, Any]:
    with pytest.raises(InvalidInput) as caught:
        prep.encode_records([record])
    details: dict[str, Any] = caught.value.details
    return details


def test_record_encoding_matches_frame_encoding_on_real_rows(prep: Preprocessing) -> None:
    frame = adult_frame("adult.test").head(300)
    records = json.loads(frame.drop(columns=[schema.LABEL]).to_json(orient="records"))
    matrix, _ = prep.encode_records(records)
    np.testing.assert_array_equal(matrix, prep.encode_frame(frame))


def test_one_record_encodes_as_it_does_among_many(prep: Preprocessing) -> None:
    """A single prediction takes a plain-Python path (numpy's per-call cost is most of a
    one-row encoding): it must give what the batch path gives for the same row."""
    frame = adult_frame("adult.test").head(200)
    records = json.loads(frame.drop(columns=[schema.LABEL]).to_json(orient="records"))
    records += [
        dict(SAMPLE_RECORD, workclass=None, occupation="?", age=""),
        {k: v for k, v in SAMPLE_RECORD.items() if k != "native-country"},
        dict(SAMPLE_RECORD, **{"native-country": "Holand-Netherlands"}),  # unseen
    ]
    matrix, imputed = prep.encode_records(records)
    for i, record in enumerate(records):
        one, one_imputed = prep.encode_records([record])
        np.testing.assert_array_equal(one, matrix[i : i + 1])
        assert one.dtype == matrix.dtype and one_imputed == [imputed[i]]
    assert any(imputed[-3:])  # the control: the edge rows did fill something


def test_missing_values_are_filled_with_the_training_mode_and_reported(
    prep: Preprocessing,
) -> None:
    record = dict(SAMPLE_RECORD, workclass=None, occupation="?", age="")
    del record["native-country"]
    matrix, imputed = prep.encode_records([record])
    mode_row = prep.encode_frame(adult_frame().head(0).reindex([0]))[0]  # all-NaN row
    j = {name: i for i, name in enumerate(prep.features)}
    for name in ("workclass", "occupation", "age", "native-country"):
        assert matrix[0, j[name]] == mode_row[j[name]]
    assert sorted(imputed[0]) == ["age", "native-country", "occupation", "workclass"]
    assert prep.fill_values["workclass"] == "Private"


def test_a_valid_category_unseen_in_training_is_treated_as_missing() -> None:
    frame = adult_frame()
    prep = Preprocessing.fit(frame[frame["native-country"] != "Holand-Netherlands"])
    assert "Holand-Netherlands" not in prep.categories["native-country"]
    record = dict(SAMPLE_RECORD, **{"native-country": "Holand-Netherlands"})
    matrix, imputed = prep.encode_records([record])
    expected, _ = prep.encode_records([dict(SAMPLE_RECORD, **{"native-country": None})])
    np.testing.assert_array_equal(matrix, expected)
    assert imputed == [["native-country"]]


def test_a_category_outside_the_domain_is_an_error_naming_the_field(prep: Preprocessing) -> None:
    details = errors_for(prep, dict(SAMPLE_RECORD, **{"native-country": "Atlantis"}))
    assert list(details) == ["native-country"]
    assert "'Atlantis' is not a valid native-country" in details["native-country"][0]


def test_surrounding_whitespace_is_ignored_as_in_the_raw_files(prep: Preprocessing) -> None:
    spaced = dict(SAMPLE_RECORD, workclass=" Private ", age=" 37 ")
    np.testing.assert_array_equal(
        prep.encode_records([spaced])[0], prep.encode_records([SAMPLE_RECORD])[0]
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("age", "abc", "A number is required, got 'abc'."),
        ("age", {"nested": 1}, "A number is required, got dict."),
        ("age", [37], "A number is required, got list."),
        ("age", True, "A number is required, got bool."),
        ("age", "NaN", "A finite number is required."),
        ("hours-per-week", "inf", "A finite number is required."),
        ("fnlwgt", 10**400, "A number is required, got '1000000000"),
        ("workclass", 3, "A string is required, got int."),
        ("sex", {"a": "b"}, "A string is required, got dict."),
    ],
)
def test_a_value_of_the_wrong_type_is_an_error_naming_the_field(
    prep: Preprocessing, field: str, value: Any, message: str
) -> None:
    details = errors_for(prep, dict(SAMPLE_RECORD, **{field: value}))
    assert list(details) == [field]
    assert details[field][0].startswith(message)


def test_unknown_features_are_errors(prep: Preprocessing) -> None:
    details = errors_for(prep, dict(SAMPLE_RECORD, salary=1))
    assert "Unknown feature" in details["salary"][0]


def test_every_bad_field_is_reported_at_once(prep: Preprocessing) -> None:
    details = errors_for(prep, dict(SAMPLE_RECORD, age="x", sex="?x", extra=1))
    assert set(details) == {"age", "sex", "extra"}


def test_a_record_that_is_not_an_object_is_an_error(prep: Preprocessing) -> None:
    assert "non_field_errors" in errors_for(prep, ["age", 37])


def test_errors_in_a_batch_name_the_record(prep: Preprocessing) -> None:
    with pytest.raises(InvalidInput) as caught:
        prep.encode_records([SAMPLE_RECORD, dict(SAMPLE_RECORD, age="old")])
    assert caught.value.details == {"1": {"age": ["A number is required, got 'old'."]}}


def test_it_survives_a_round_trip_through_its_stored_form(prep: Preprocessing) -> None:
    stored = json.loads(json.dumps(prep.to_dict()))
    again = Preprocessing.from_dict(stored)
    np.testing.assert_array_equal(
        again.encode_records([SAMPLE_RECORD])[0], prep.encode_records([SAMPLE_RECORD])[0]
    )
