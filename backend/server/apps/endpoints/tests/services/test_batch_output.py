"""Streaming a batch answer: memory per piece, not per file."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest

from apps.endpoints import batch_output, feedback
from apps.endpoints.batch import BatchResult

ROWS = 200_000


@pytest.fixture
def result() -> BatchResult:
    probabilities = np.random.default_rng(0).random(ROWS)
    return BatchResult(
        header=["age"],
        algorithms=[],
        ignored_columns=[],
        label_column=None,
        request_ids=np.arange(1, ROWS + 1, dtype=np.int64),
        probabilities=probabilities,
        labels=[">50K" if p > 0.5 else "<=50K" for p in probabilities.tolist()],
        arms=np.zeros(ROWS, np.int64),
    )


def peak_while_consuming(pieces: Iterator[str]) -> int:
    """Peak bytes Python allocated while the stream was read piece by piece."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for _ in pieces:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_json_answer_streams_in_pieces(result: BatchResult) -> None:
    # Converting all 200k ids and probabilities to Python objects at once took about 14 MB
    # (70 MB at a million rows); a piece of 5,000 rows takes about 2 MB.
    assert peak_while_consuming(batch_output.json_stream(result)) < 5_000_000
    body = json.loads("".join(batch_output.json_stream(result)))
    assert len(body["predictions"]) == ROWS
    assert body["predictions"][-1] == {
        "request_id": ROWS,
        "label": result.labels[-1],
        "probability": float(result.probabilities[-1]),
        "feedback_token": feedback.token_for(ROWS),
    }


def test_the_csv_answer_streams_in_pieces(result: BatchResult) -> None:
    upload = io.BytesIO(("age\n" + "".join(f"{i % 90}\n" for i in range(ROWS))).encode())
    assert peak_while_consuming(batch_output.csv_stream(result, upload)) < 5_000_000
    lines = "".join(batch_output.csv_stream(result, upload)).splitlines()
    assert lines[0] == "age,request_id,label,probability,feedback_token"
    assert len(lines) == ROWS + 1
    last = lines[-1].split(",")
    assert last[1:3] == [str(ROWS), result.labels[-1]]
    assert last[4] == feedback.token_for(ROWS)


AWKWARD = ["plain", "with,comma", 'say "hi"', "two\nlines", "back\\slash", "tab\there", "é ☃"]


def test_labels_of_any_text_are_escaped_in_both_answers() -> None:
    # Found in review: labels went into the answers through string templates, unescaped.
    n = len(AWKWARD)
    result = BatchResult(
        header=["x"],
        algorithms=[],
        ignored_columns=[],
        label_column=None,
        request_ids=np.arange(1, n + 1, dtype=np.int64),
        probabilities=np.linspace(0, 1, n),
        labels=list(AWKWARD),
        arms=np.zeros(n, np.int64),
    )
    body = json.loads("".join(batch_output.json_stream(result)))
    assert [p["label"] for p in body["predictions"]] == AWKWARD
    upload = io.BytesIO(("x\n" + "".join(f"{i}\n" for i in range(n))).encode())
    text = "".join(batch_output.csv_stream(result, upload))
    rows = list(csv.reader(io.StringIO(text)))
    assert [row[2] for row in rows[1:]] == AWKWARD


def test_the_logged_answers_escape_labels_too() -> None:
    from apps.endpoints.batch import _responses_json

    labels = [*AWKWARD, "50%", "%r %s"]
    probabilities = [i / len(labels) for i in range(len(labels))]
    rows = _responses_json(probabilities, labels, {1: ["age"]})
    decoded = [json.loads(row) for row in rows]
    assert [d["label"] for d in decoded] == labels
    assert [d["probability"] for d in decoded] == probabilities
    assert decoded[1]["imputed"] == ["age"] and decoded[0]["imputed"] == []
