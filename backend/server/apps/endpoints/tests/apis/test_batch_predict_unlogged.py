"""batch-predict with ``log_requests=false`` (answers only, nothing written), and the
queries a file costs per chunk, logged or not: what its speed rests on (issue 30)."""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from apps.endpoints.experiments import ab_testing
from apps.endpoints.models import MLAlgorithm, MLRequest
from apps.endpoints.tests.apis.test_batch_predict import (
    URL,
    adult_csv,
    assert_error,
    stream_json,
    upload,
)
from apps.ml.registry import MLRegistry

if TYPE_CHECKING:
    from apps.endpoints.serving.pipeline import ScoredBatch

pytestmark = pytest.mark.django_db


def test_without_the_log_the_answers_are_the_same_and_nothing_is_written(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    logged = stream_json(upload(api, adult_csv(25)))
    assert logged["logged"] is True and MLRequest.objects.count() == 25
    answers_only = stream_json(upload(api, adult_csv(25), URL + "?log_requests=false"))
    assert answers_only["logged"] is False and answers_only["count"] == 25
    assert MLRequest.objects.count() == 25  # the first upload's rows, no more
    for mine, theirs in zip(answers_only["predictions"], logged["predictions"], strict=True):
        assert set(mine) == set(theirs) - {"request_id", "feedback_token"}
        assert mine["label"] == theirs["label"]
        assert mine["probability"] == pytest.approx(theirs["probability"], abs=1e-12)


def test_the_form_field_works_as_the_query_parameter(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = adult_csv(3).encode()
    form = {"file": SimpleUploadedFile("f.csv", data, "text/csv"), "log_requests": "false"}
    assert stream_json(api.post(URL, form))["logged"] is False
    assert MLRequest.objects.count() == 0


def test_a_label_column_is_evaluated_but_not_recorded(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    body = stream_json(upload(api, adult_csv(40), URL + "?log_requests=false"))
    assert body["label_column"] == "income" and body["labelled"] == 40
    correct = sum(
        p["label"] == truth.rstrip(".")
        for p, truth in zip(
            body["predictions"],
            [row["income"] for row in csv.DictReader(io.StringIO(adult_csv(40)))],
            strict=True,
        )
    )
    assert body["accuracy"] == pytest.approx(correct / 40)
    assert body["labels_recorded"] is False and "log_requests" in body["labels_note"]
    assert MLRequest.objects.count() == 0


def test_the_csv_answer_has_no_ids_or_tokens_without_the_log(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    response = upload(api, adult_csv(6), URL + "?format=csv&log_requests=false")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    header = rows[0]
    assert header[-2:] == ["label", "probability"]
    assert "request_id" not in header and "feedback_token" not in header
    assert len(rows) == 7 and MLRequest.objects.count() == 0


def test_an_ab_test_needs_the_log(api: APIClient, demo_registry: MLRegistry) -> None:
    ab_testing.create(
        title="t",
        created_by="t",
        parent_mlalgorithm_1=MLAlgorithm.objects.get(name="random forest"),
        parent_mlalgorithm_2=MLAlgorithm.objects.get(name="extra trees"),
    )
    response = upload(api, adult_csv(5), URL + "?status=ab_testing&log_requests=false")
    assert_error(response, 400, "log_requests=true")
    assert stream_json(upload(api, adult_csv(5), URL + "?status=ab_testing"))["logged"] is True


def test_a_bad_flag_is_a_400(api: APIClient, demo_registry: MLRegistry) -> None:
    response = upload(api, adult_csv(5), URL + "?log_requests=perhaps")
    assert response.status_code == 400 and "log_requests" in json.dumps(response.json())


def _queries(api: APIClient, rows: int, log: bool) -> int:
    query = "" if log else "?log_requests=false"
    with CaptureQueriesContext(connection) as seen:
        stream_json(upload(api, adult_csv(rows), URL + query))
    return len(seen.captured_queries)


@pytest.mark.parametrize("log", [True, False])
def test_the_queries_a_file_costs_per_chunk(
    api: APIClient, demo_registry: MLRegistry, settings: Any, log: bool
) -> None:
    """Pinned: a logged chunk costs one INSERT of its rows (and nothing per row); an
    unlogged file costs no query per chunk at all."""
    settings.BATCH_CHUNK_ROWS = 10
    _queries(api, 10, log)  # warm: the catalogue's cached selections
    two, six = _queries(api, 20, log), _queries(api, 60, log)
    assert (six - two) / 4 == (1 if log else 0)


def _scored(data: bytes, *, log_requests: bool, answer_json: bool) -> ScoredBatch:
    """``score_upload`` of the file ``data`` to the demo endpoint, by an anonymous client."""
    from apps.endpoints.batch import score
    from apps.endpoints.tests.factories import anonymous

    return score.score_upload(
        upload=io.BytesIO(data),
        endpoint_name="income_classifier",
        status="production",
        actor=anonymous(),
        log_requests=log_requests,
        answer_json=answer_json,
    )


def test_json_rows_written_as_scored_are_the_answer_the_arrays_give(
    demo_registry: MLRegistry, settings: Any
) -> None:
    """Unlogged rows answered as JSON are written as each chunk is scored (``json_rows``);
    the stream is byte for byte the one written from the arrays at the end."""
    from apps.endpoints.batch import output

    settings.BATCH_CHUNK_ROWS = 8  # 30 rows: 2, 4, 8, 8, 8 (the ramp)
    data = adult_csv(30).encode()
    answers = {}
    for answer_json in (False, True):
        result = _scored(data, log_requests=False, answer_json=answer_json)
        assert (result.json_texts is not None) == answer_json
        if answer_json:
            assert result.json_texts is not None and len(result.json_texts) == 5
        answers[answer_json] = "".join(output.json_stream(result))
    assert answers[True] == answers[False]
    body = json.loads(answers[True])
    assert body["count"] == 30 and len(body["predictions"]) == 30


@pytest.mark.parametrize("log_requests", [False, True])
def test_a_file_past_json_rows_max_keeps_its_arrays(
    demo_registry: MLRegistry, monkeypatch: pytest.MonkeyPatch, log_requests: bool
) -> None:
    """The text is held until the answer streams: past JSON_ROWS_MAX rows a file keeps
    the arrays, and its memory does not grow with it."""
    from apps.endpoints.batch import score

    data = adult_csv(30).encode()
    kept = {}
    for limit in (30, 29):
        monkeypatch.setattr(score, "JSON_ROWS_MAX", limit)
        result = _scored(data, log_requests=log_requests, answer_json=True)
        kept[limit] = result.json_texts is not None
    assert kept == {30: True, 29: False}


def test_logged_json_rows_written_as_the_log_is_written_are_the_log(
    demo_registry: MLRegistry, settings: Any
) -> None:
    """Logged rows answered as JSON are written chunk by chunk once the log's writer has
    their ids (``json_rows`` with a log): every row is its logged request, in file order,
    with that request's answer and a token that is its own; the stream is the same as the
    one written from the arrays, but for the ids and tokens of a second upload."""
    from apps.endpoints.batch import output
    from apps.endpoints.serving import feedback
    from apps.endpoints.serving.pipeline import ScoredBatch

    settings.BATCH_CHUNK_ROWS = 8  # 30 rows: 2, 4, 8, 8, 8 (the ramp)
    data = adult_csv(30).encode()
    bodies = {}
    for answer_json in (True, False):
        result = _scored(data, log_requests=True, answer_json=answer_json)
        assert (result.json_texts is not None) == answer_json and result.logged
        bodies[answer_json] = json.loads("".join(output.json_stream(result)))
    rows = bodies[True]["predictions"]
    logged = {r.pk: r for r in MLRequest.objects.filter(pk__in=[r["request_id"] for r in rows])}
    assert [r["request_id"] for r in rows] == sorted(logged) and len(rows) == 30
    for row in rows:
        request = logged[row["request_id"]]
        assert feedback.token_matches(request.pk, row["feedback_token"])
        answer = {k: v for k, v in row.items() if k not in ("request_id", "feedback_token")}
        assert answer == {k: request.full_response[k] for k in answer}
        assert row["label"] == request.response
    envelope = ("request_id", "feedback_token")
    assert [{k: v for k, v in r.items() if k not in envelope} for r in rows] == [
        {k: v for k, v in r.items() if k not in envelope} for r in bodies[False]["predictions"]
    ]
    assert {k: v for k, v in bodies[True].items() if k != "predictions"} == {
        k: v for k, v in bodies[False].items() if k != "predictions"
    }
    with pytest.raises(ValueError, match="log's writer"):
        ScoredBatch(result.arms, result.answer, request_ids=result.request_ids, json_rows=True)
