"""Requests in by the signature: every bad value an error naming its field, never a model
error; answers out in the one shape."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from apps.core.errors import InvalidInput
from apps.ml import codecs
from apps.ml.signature import Feature, Signature

SIGNATURE = Signature(
    features=(
        Feature("age", "number"),
        Feature("income", "number", required=False),
        Feature("colour", "category", categories=("red", "white")),
        Feature("grade", "category", categories=(1, 2, 3), required=False),
        Feature("note", "string", required=False),
        Feature("member", "boolean", required=False),
        Feature("city", "category", categories=("Oslo",), unknown="accept", required=False),
    ),
    task="classification",
    classes=("no", "yes"),
    outputs=("label", "probability", "probabilities", "status"),
)
GOOD = {"age": 40, "colour": "red"}


def errors(record: Any) -> dict[str, Any]:
    with pytest.raises(InvalidInput) as caught:
        codecs.frame_from_records([record], SIGNATURE)
    details: dict[str, Any] = caught.value.details
    return details


def test_a_good_record_becomes_typed_columns_with_gaps_where_optional() -> None:
    frame = codecs.frame_from_records([GOOD, {**GOOD, "income": "1200.5", "grade": "2"}], SIGNATURE)
    assert frame.rows == 2
    assert frame.columns["age"].dtype == np.float64
    assert math.isnan(frame.columns["income"][0]) and frame.columns["income"][1] == 1200.5
    assert frame.columns["grade"].tolist() == [None, 2]  # "2" is the category 2
    assert frame.columns["note"].tolist() == [None, None]
    pandas = frame.to_pandas()
    assert list(pandas.columns) == list(SIGNATURE.names)
    assert pandas["note"].isna().all()  # None becomes NaN, what imputers look for


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("age", "forty", "A number is required, got 'forty'."),
        ("age", [40], "A number is required, got list."),
        ("age", {"years": 40}, "A number is required, got dict."),
        ("age", True, "A number is required, got bool."),
        ("age", "NaN", "A finite number is required."),
        ("age", "Infinity", "A finite number is required."),
        ("age", 10**400, "A number is required, got '1000000000"),
        ("age", None, "This feature is required."),
        ("colour", "green", "'green' is not a valid colour. Valid: red, white."),
        ("colour", 3, "A string is required, got int."),
        ("colour", ["red"], "A string is required, got list."),
        ("grade", 4, "'4' is not a valid grade. Valid: 1, 2, 3."),
        ("grade", "two", "'two' is not a valid grade."),
        ("note", 5, "A string is required, got int."),
        ("member", "maybe", "true or false is required, got 'maybe'."),
        ("member", {"a": 1}, "true or false is required, got dict."),
    ],
)
def test_a_bad_value_is_an_error_naming_its_field(field: str, value: Any, message: str) -> None:
    record = {**GOOD, field: value}
    if value is None:
        del record[field]
    details = errors(record)
    assert list(details) == [field]
    assert details[field][0].startswith(message)


def test_an_open_category_takes_values_its_encoder_never_saw() -> None:
    frame = codecs.frame_from_records([{**GOOD, "city": "Bergen"}], SIGNATURE)
    assert frame.columns["city"].tolist() == ["Bergen"]


def test_unknown_features_and_non_objects_are_errors() -> None:
    assert "Unknown feature" in errors({**GOOD, "salary": 1})["salary"][0]
    assert "non_field_errors" in errors(["age", 40])


def test_errors_in_a_batch_name_the_record() -> None:
    with pytest.raises(InvalidInput) as caught:
        codecs.frame_from_records([GOOD, {**GOOD, "age": "old"}], SIGNATURE)
    assert caught.value.details == {"1": {"age": ["A number is required, got 'old'."]}}


def test_long_allowed_values_are_clipped_in_the_message() -> None:
    many = Signature(
        features=(Feature("code", "category", categories=tuple(f"c{i}" for i in range(500))),),
        task="regression",
    )
    with pytest.raises(InvalidInput) as caught:
        codecs.frame_from_records([{"code": "zzz"}], many)
    message = caught.value.details["code"][0]
    assert "and 460 more" in message and len(message) < 600


NUMBERS = Signature(
    features=(Feature("a", "number"), Feature("b", "number", required=False)),
    task="regression",
    outputs=("prediction", "status"),
)


def test_all_number_records_make_the_same_frame_as_one_matrix() -> None:
    records = [{"a": 1, "b": 2.5}, {"a": -3.25, "b": 0}]
    fast = codecs.frame_from_records(records, NUMBERS)
    assert fast.matrix is not None  # built by the fast path
    assert fast.to_matrix().tolist() == [[1.0, 2.5], [-3.25, 0.0]]
    assert fast.columns["b"].tolist() == [2.5, 0.0]
    assert fast.to_pandas().to_dict("records") == [{"a": 1.0, "b": 2.5}, {"a": -3.25, "b": 0.0}]
    # A gap leaves the fast path; the general one fills in NaN and gives the same columns.
    general = codecs.frame_from_records([*records, {"a": 7}], NUMBERS)
    assert general.matrix is None
    assert general.to_matrix()[:2].tolist() == fast.to_matrix().tolist()
    assert math.isnan(general.columns["b"][2])


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        ({"a": True, "b": 1}, "a", "A number is required, got bool."),
        ({"a": 10**400, "b": 1}, "a", "A number is required, got '1000000000"),
        ({"a": "1", "b": float("inf")}, "b", "A finite number is required."),
        ({"a": 1, "b": [1]}, "b", "A number is required, got list."),
        ({"a": 1, "b": 1, "c": 1}, "c", "Unknown feature."),
        ({"b": 1}, "a", "This feature is required."),
    ],
)
def test_all_number_records_are_checked_as_any_other(
    record: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        codecs.frame_from_records([record], NUMBERS)
    assert caught.value.details[field][0].startswith(message)
    # "1" is a number too: only the check of the other field fails.
    assert codecs.frame_from_records([{"a": "1", "b": 2}], NUMBERS).to_matrix().tolist() == [
        [1.0, 2.0]
    ]


def test_text_cells_are_checked_and_named_by_line_and_column() -> None:
    columns = {
        "age": ["40", "41", "x"],
        "income": ["", "10", "11"],
        "colour": ["red", " white ", "red"],
        "grade": ["1", "", "3"],
        "note": ["", "hi", ""],
        "member": ["true", "0", ""],
        "city": ["", "", "Paris"],
    }
    with pytest.raises(InvalidInput) as caught:
        codecs.frame_from_text(columns, SIGNATURE, first_line=10)
    assert caught.value.message.startswith("Line 12, column 'age': A number is required")
    columns["age"][2] = "42"
    frame = codecs.frame_from_text(columns, SIGNATURE, first_line=10)
    assert frame.columns["colour"].tolist() == ["red", "white", "red"]
    assert frame.columns["member"].tolist() == [True, False, None]
    assert frame.columns["grade"].tolist() == [1, None, 3]
    columns["colour"][0] = ""  # required
    with pytest.raises(InvalidInput, match="Line 10, column 'colour': This feature is required"):
        codecs.frame_from_text(columns, SIGNATURE, first_line=10)


# -- what a refusal carries, for drift monitoring ----------------------------------------


def test_a_refused_record_carries_what_was_read_and_each_refused_cell_with_its_kind() -> None:
    records = [
        {"age": "forty", "colour": "red", "grade": 2},
        {"colour": "blue", "income": 3.5},
        GOOD,
    ]
    with pytest.raises(codecs.InvalidCells) as caught:
        codecs.frame_from_records(records, SIGNATURE)
    refused = caught.value
    assert sorted(refused.cells) == [
        (0, "age", codecs.TYPE),
        (1, "age", codecs.MISSING),
        (1, "colour", codecs.UNSEEN),
    ]
    frame = refused.frame
    assert frame.rows == 3
    assert math.isnan(frame.columns["age"][0]) and frame.columns["age"][2] == 40
    assert frame.columns["colour"][1] is None and frame.columns["income"][1] == 3.5
    assert refused.details["1"]["colour"]  # the client's answer is unchanged


def test_a_refused_file_chunk_carries_every_refused_cell_not_only_the_ten_it_shows() -> None:
    cells = {
        "age": ["x"] * 12 + ["30"],
        "income": [""] * 13,
        "colour": ["red"] * 12 + ["green"],
        "grade": [""] * 13,
        "note": [""] * 13,
        "member": [""] * 13,
        "city": [""] * 13,
    }
    with pytest.raises(codecs.InvalidCells) as caught:
        codecs.frame_from_text(cells, SIGNATURE)
    refused = caught.value
    assert len(refused.details["cells"]) == 10
    assert sorted(refused.cells) == sorted(
        [(i, "age", codecs.TYPE) for i in range(12)] + [(12, "colour", codecs.UNSEEN)]
    )
    assert refused.frame.rows == 13 and refused.frame.columns["age"][12] == 30.0
