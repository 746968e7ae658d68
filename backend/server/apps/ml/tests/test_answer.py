"""The answer, defined once: every form of it agrees with every other."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import jsonschema  # schemathesis' own dependency (requirements.txt)
import numpy as np
import pytest

from apps.ml.answer import Answer, ModelOutput, _texts
from apps.ml.signature import Feature, Signature

FEATURES = (Feature("age", "number"),)
BINARY = Signature(
    FEATURES, "classification", ("no", "yes"), ("label", "probability", "probabilities", "status")
)
REGRESSOR = Signature(FEATURES, "regression", (), ("prediction", "status"))
# Labels that JSON, a %-template or CSV would each mangle if written carelessly.
AWKWARD = ('a "quoted" label', "back\\slash", "tab\there", "new\nline", "50%", "%r %s", "é ☃")


def test_predictions_follow_the_outputs_of_the_signature() -> None:
    output = ModelOutput(
        labels=np.array(["yes", "no"], dtype=object),
        probabilities=np.array([[0.25, 0.75], [0.9, 0.1]]),
    )
    first, second = Answer(BINARY).predictions(output)
    assert first == {
        "label": "yes",
        "probability": 0.75,
        "probabilities": {"no": 0.25, "yes": 0.75},
        "status": "OK",
    }
    assert list(first) == list(BINARY.outputs)  # the signature's order
    assert second["label"] == "no" and second["probability"] == 0.1
    regressor = Answer(REGRESSOR)
    values = ModelOutput(values=np.array([2.5]))
    assert regressor.predictions(values) == [{"prediction": 2.5, "status": "OK"}]
    assert regressor.responses(values) == ["2.5"]
    assert Answer(BINARY).responses(output) == ["yes", "no"]


@pytest.mark.parametrize("fields", [("label", "status"), ("label", "probabilities", "imputed")])
def test_the_logged_text_is_the_json_of_the_prediction_whatever_the_label(
    fields: tuple[str, ...],
) -> None:
    """Regression (the batch log): a template without numbers to fill was never
    %-formatted, and the label "50%" was logged as "50%%"."""
    signature = Signature(FEATURES, "classification", AWKWARD, fields)
    rng = np.random.default_rng(1)
    output = ModelOutput(
        labels=np.array(AWKWARD, dtype=object),
        probabilities=rng.dirichlet(np.ones(len(AWKWARD)), size=len(AWKWARD)),
        imputed=[["age"] if i == 1 else [] for i in range(len(AWKWARD))],
    )
    answer = Answer(signature)
    texts = answer.texts(output)
    assert [json.loads(t) for t in texts] == answer.predictions(output)
    assert [json.loads(t)["label"] for t in texts] == list(AWKWARD)
    again = answer.texts(output)  # from the templates made the first time
    assert again == texts


def test_a_batch_row_is_the_envelope_around_the_values() -> None:
    signature = Signature(FEATURES, "classification", AWKWARD, ("label", "probabilities", "status"))
    probabilities = np.full((len(AWKWARD), len(AWKWARD)), 1 / len(AWKWARD))
    output = ModelOutput(labels=np.array(AWKWARD, dtype=object), probabilities=probabilities)
    answer = Answer(signature)
    ids = list(range(7, 7 + len(AWKWARD)))
    tokens = [f"t{i}%s" for i in ids]
    rows = [json.loads(t) for t in answer.row_texts(output, ids, tokens)]
    for row, pk, token, prediction in zip(
        rows, ids, tokens, answer.predictions(output), strict=True
    ):
        assert list(row) == ["request_id", "label", "probabilities", "feedback_token"]
        assert row["request_id"] == pk and row["feedback_token"] == token
        assert row["label"] == prediction["label"]
        assert row["probabilities"] == prediction["probabilities"]
    bare = [json.loads(t) for t in answer.row_texts(output, None, None)]
    assert [list(r) for r in bare] == [["label", "probabilities"]] * len(AWKWARD)


def _same(text: str, expected: dict[str, Any]) -> bool:
    """Whether ``text`` is the JSON of ``expected``: the same keys in the same order, the
    same values of the same types (an int stays an int), every float exactly."""
    value = json.loads(text)
    return (
        list(value) == list(expected)
        and value == expected
        and [type(v) for v in value.values()] == [type(v) for v in expected.values()]
    )


def test_the_texts_are_the_json_of_each_answer_whatever_the_model() -> None:
    """The texts are written from templates and numbers formatted a column at a time
    (``Answer._filled``), not by ``json.dumps``: they must still read back as exactly each
    answer (the log keeps them; clients compare them), for every kind of model."""
    rng = np.random.default_rng(2)
    multiclass = Signature(FEATURES, "classification", AWKWARD, ("label", "probabilities"))
    cases = [
        (
            BINARY,
            ModelOutput(
                labels=np.array(["yes", "no", "yes", "no"], dtype=object),
                # float32, as ONNX Runtime answers, with a tiny and an exact probability.
                probabilities=np.array(
                    [[0.1, 0.9], [1 - 1e-7, 1e-7], [0.0, 1.0], [0.8040184, 0.1959816]],
                    dtype=np.float32,
                ),
            ),
        ),
        (
            multiclass,
            ModelOutput(
                labels=np.array(AWKWARD, dtype=object),
                probabilities=rng.dirichlet(np.ones(len(AWKWARD)), size=len(AWKWARD)),
            ),
        ),
        (REGRESSOR, ModelOutput(values=np.array([2.5, -1e-7, 3e21, 0.1, -0.0, 5e-324]))),
        (REGRESSOR, ModelOutput(values=np.array([3, -4]))),  # a model that answers ints
    ]
    for signature, output in cases:
        answer = Answer(signature)
        predictions = answer.predictions(output)
        texts = answer.texts(output)
        assert len(texts) == len(predictions)
        assert all(_same(t, p) for t, p in zip(texts, predictions, strict=True))  # type: ignore[arg-type]
        rows = [{k: v for k, v in p.items() if k in answer.row_fields} for p in predictions]
        bare = answer.row_texts(output, None, None)
        assert len(bare) == len(rows)
        assert all(_same(t, r) for t, r in zip(bare, rows, strict=True))
        ids, tokens = list(range(1, len(rows) + 1)), [f"t%s{i}" for i in range(len(rows))]
        enveloped = [
            {"request_id": pk, **row, "feedback_token": token}
            for pk, row, token in zip(ids, rows, tokens, strict=True)
        ]
        logged = answer.row_texts(output, ids, tokens)
        assert all(_same(t, r) for t, r in zip(logged, enveloped, strict=True))
        # The CSV cells and the log's response hold the same numbers.
        for cells, prediction in zip(answer.csv_rows(output), predictions, strict=True):
            if "prediction" in prediction:
                assert [float(c) for c in cells] == [prediction["prediction"]]
                continue
            assert cells[0] == prediction["label"]
            if "probability" in answer.csv_columns():
                assert [float(c) for c in cells[1:]] == [prediction["probability"]]
            else:
                assert [float(c) for c in cells[1:]] == list(prediction["probabilities"].values())
        if answer.regressor:
            assert [float(r) for r in answer.responses(output)] == [
                p["prediction"] for p in predictions
            ]


def _digits(text: str) -> str:
    """The significant digits of a number's text, whatever its notation."""
    return text.lstrip("-").split("e")[0].replace(".", "").strip("0")


def test_each_number_is_written_as_the_shortest_text_of_its_float64() -> None:
    """``_texts`` (orjson) against Python's own ``float`` and ``repr``: every text reads
    back as exactly its float64, with as many digits as ``repr``, the shortest, across
    magnitudes and for float32 columns (their float64 value)."""
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [
            rng.random(2_000),
            rng.standard_normal(2_000) * 10.0 ** rng.integers(-300, 300, 2_000),
            [0.0, -0.0, 1.0, 0.1, 1e-7, 1e16, 1e22, 5e-324, 2.2250738585072014e-308],
            [1.7976931348623157e308, 123456789012345678.0, 0.30000000000000004],
        ]
    )
    for column in (values, rng.random(2_000).astype(np.float32), values[::3]):
        texts = _texts(column)
        assert [float(t) for t in texts] == column.tolist()
        assert [_digits(t) for t in texts] == [_digits(repr(v)) for v in column.tolist()]
    assert _texts(np.array([3, -4])) == ["3", "-4"]
    assert _texts(np.empty(0)) == []


def test_every_row_matches_its_schema_and_its_csv_columns() -> None:
    cases = [
        (
            BINARY,
            ModelOutput(
                labels=np.array(["yes"], dtype=object), probabilities=np.array([[0.4, 0.6]])
            ),
        ),
        (REGRESSOR, ModelOutput(values=np.array([1.25]))),
        (
            Signature(
                FEATURES, "classification", ("a", "b", "c"), ("label", "probabilities", "status")
            ),
            ModelOutput(
                labels=np.array(["c"], dtype=object), probabilities=np.array([[0.1, 0.2, 0.7]])
            ),
        ),
    ]
    for signature, output in cases:
        answer = Answer(signature)
        [prediction] = answer.predictions(output)
        served = {**prediction, "request_id": 3, "feedback_token": "x"}
        jsonschema.validate(served, answer.json_schema())
        [row] = answer.row_texts(output, [3], ["x"])
        jsonschema.validate(json.loads(row), answer.row_schema())
        text = io.StringIO()
        csv.writer(text).writerows([answer.csv_header(logged=False), *answer.csv_rows(output)])
        [parsed] = csv.DictReader(io.StringIO(text.getvalue()))
        for column, cell in parsed.items():
            if column == "label":
                assert cell == prediction["label"]
            elif column == "prediction":
                assert float(cell) == prediction["prediction"]
            elif column == "probability":
                assert float(cell) == prediction["probability"]
            else:
                assert (
                    float(cell) == prediction["probabilities"][column.removeprefix("probability_")]
                )


def test_outputs_split_and_join_back() -> None:
    output = ModelOutput(
        labels=np.array(["a", "b", "c"], dtype=object),
        probabilities=np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]),
        imputed=[[], ["x"], []],
    )
    parts = [output.part(slice(0, 2)), output.part(slice(2, 3))]
    assert [p.rows for p in parts] == [2, 1]
    joined = ModelOutput.join(parts)
    assert joined.labels is not None and joined.labels.tolist() == ["a", "b", "c"]
    assert joined.imputed == [[], ["x"], []]
    assert joined.probabilities is not None and output.probabilities is not None
    assert np.array_equal(joined.probabilities, output.probabilities)
