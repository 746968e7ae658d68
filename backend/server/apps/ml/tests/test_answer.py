"""The answer, defined once: every form of it agrees with every other."""

from __future__ import annotations

import csv
import io
import json

import jsonschema  # schemathesis' own dependency (requirements.txt)
import numpy as np
import pytest

from apps.ml.answer import Answer, ModelOutput
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
