"""POST /api/v1/batch-predict: CSV uploads scored in chunks, logged in one transaction."""

from __future__ import annotations

import csv
import io
import json
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from apps.endpoints.models import MLAlgorithm, MLRequest
from apps.endpoints.serving import feedback
from apps.endpoints.serving.predict import predict
from apps.endpoints.tests.factories import anonymous
from apps.ml.income_classifier import IncomeClassifier, schema
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db
URL = "/api/v1/batch-predict"


def adult_csv(rows: int = 30, *, columns: list[str] | None = None, extra: bool = True) -> str:
    """The first ``rows`` records of adult.test as CSV text with a header (and an id)."""
    from apps.ml.tests.factories import adult_frame

    frame = adult_frame("adult.test").head(rows).copy()
    frame["income"] = frame["income"] + "."  # as adult.test writes it
    if extra:
        frame.insert(0, "id", range(1, rows + 1))
    if columns is not None:
        frame = frame[columns]
    text: str = frame.to_csv(index=False)
    return text


def upload(api: APIClient, text: str | bytes, url: str = URL, **extra: Any) -> Any:
    data = text.encode() if isinstance(text, str) else text
    return api.post(url, {"file": SimpleUploadedFile("f.csv", data, "text/csv")}, **extra)


def stream_json(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, getattr(response, "content", b"")[:500]
    body: dict[str, Any] = json.loads(b"".join(response.streaming_content))
    return body


def assert_error(response: Any, status: int, fragment: str) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert fragment in error["message"], error
    assert MLRequest.objects.count() == 0
    return error


def test_every_row_including_the_last_is_predicted_and_persisted(
    api: APIClient, demo_registry: MLRegistry, settings: Any
) -> None:
    settings.BATCH_CHUNK_ROWS = 7  # 30 rows: chunks of 1, 2, 4, 7, 7, 7, 2 (the ramp)
    body = stream_json(upload(api, adult_csv(30)))
    assert body["count"] == 30 and len(body["predictions"]) == 30
    ids = [p["request_id"] for p in body["predictions"]]
    rows = {r.pk: r for r in MLRequest.objects.filter(pk__in=ids)}
    assert len(rows) == 30 and MLRequest.objects.count() == 30
    last = rows[ids[-1]]
    from apps.ml.tests.factories import adult_frame

    expected_last = adult_frame("adult.test").iloc[29]
    assert last.input_data["fnlwgt"] == str(expected_last["fnlwgt"])
    for prediction in body["predictions"]:
        row = rows[prediction["request_id"]]
        assert row.response == prediction["label"] == row.full_response["label"]
        assert row.full_response["probability"] == prediction["probability"]
        assert prediction["feedback_token"] == feedback.token_for(row.pk)


def test_batch_answers_equal_single_predictions(api: APIClient, demo_registry: MLRegistry) -> None:
    text = adult_csv(20)
    body = stream_json(upload(api, text))
    for line, prediction in zip(
        csv.DictReader(io.StringIO(text)), body["predictions"], strict=True
    ):
        record = {f: line[f] for f in schema.FEATURES}
        [single] = predict(endpoint_name="income_classifier", records=[record], status="production")
        assert single["probability"] == pytest.approx(prediction["probability"], abs=1e-12)
        assert single["label"] == prediction["label"]
        logged = MLRequest.objects.get(pk=prediction["request_id"])
        assert logged.full_response["imputed"] == single["imputed"]


def test_extra_columns_are_ignored_and_reported_and_order_does_not_matter(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    straight = stream_json(upload(api, adult_csv(15)))
    shuffled_columns = ["income", *reversed(schema.FEATURES), "id"]
    shuffled = stream_json(upload(api, adult_csv(15, columns=shuffled_columns)))
    assert straight["ignored_columns"] == shuffled["ignored_columns"] == ["id"]
    assert [p["probability"] for p in straight["predictions"]] == [
        p["probability"] for p in shuffled["predictions"]
    ]


def test_labels_become_feedback_and_the_answer_reports_accuracy(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    body = stream_json(upload(api, adult_csv(40)))
    rows = MLRequest.objects.filter(pk__in=[p["request_id"] for p in body["predictions"]])
    assert {r.feedback for r in rows} <= {"<=50K", ">50K"}  # "." normalised away
    correct = sum(r.feedback == r.response for r in rows)
    assert body["label_column"] == "income" and body["labelled"] == 40
    assert body["accuracy"] == pytest.approx(correct / 40)


def test_without_a_label_column_there_is_no_feedback_or_accuracy(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    body = stream_json(upload(api, adult_csv(5, columns=list(schema.FEATURES))))
    assert body["accuracy"] is None and body["labelled"] == 0 and body["label_column"] is None
    assert set(MLRequest.objects.values_list("feedback", flat=True)) == {None}


def test_empty_cells_and_unseen_categories_are_handled_as_in_single_predict(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    record = dict(SAMPLE_RECORD, workclass="", age="", **{"native-country": "Holand-Netherlands"})
    text = ",".join(schema.FEATURES) + "\n" + ",".join(str(record[f]) for f in schema.FEATURES)
    [prediction] = stream_json(upload(api, text))["predictions"]
    [single] = predict(endpoint_name="income_classifier", records=[record], status="production")
    assert prediction["probability"] == pytest.approx(single["probability"], abs=1e-12)
    logged = MLRequest.objects.get(pk=prediction["request_id"])
    assert sorted(logged.full_response["imputed"]) == ["age", "native-country", "workclass"]


def test_a_bad_cell_on_the_last_line_rolls_back_every_chunk(
    api: APIClient, demo_registry: MLRegistry, settings: Any
) -> None:
    settings.BATCH_CHUNK_ROWS = 5
    lines = adult_csv(23).splitlines()
    last = lines[-1].split(",")
    last[1] = "forty"  # age
    lines[-1] = ",".join(last)
    error = assert_error(upload(api, "\n".join(lines)), 400, "Line 24, column 'age'")
    assert error["details"]["cells"][0] == {
        "line": 24,
        "column": "age",
        "value": "forty",
        "message": "A number is required, got 'forty'.",
    }


def test_ab_testing_splits_rows_between_the_arms_and_logs_each_to_its_arm(
    api: APIClient, demo_registry: MLRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.endpoints.experiments import ab_testing
    from apps.endpoints.serving import pipeline

    rf, et = (
        MLAlgorithm.objects.get(name="random forest"),
        MLAlgorithm.objects.get(name="extra trees"),
    )
    test = ab_testing.create(
        title="t", created_by="t", parent_mlalgorithm_1=rf, parent_mlalgorithm_2=et, arm_2_share=0.3
    )
    shares_seen: list[list[float]] = []

    def alternate(n: int, shares: list[float]) -> np.ndarray:
        shares_seen.append(list(shares))
        return np.arange(n) % 2

    monkeypatch.setattr(pipeline, "random_arms", alternate)
    body = stream_json(upload(api, adult_csv(10), URL + "?status=ab_testing"))
    assert shares_seen == [[pytest.approx(0.7), pytest.approx(0.3)]]
    assert [a["rows"] for a in body["algorithms"]] == [5, 5]
    logged = [MLRequest.objects.get(pk=p["request_id"]) for p in body["predictions"]]
    assert [r.parent_mlalgorithm_id for r in logged] == [rf.pk, et.pk] * 5
    assert {r.ab_test_id for r in logged} == {test.pk}
    for prediction, row in zip(body["predictions"], logged, strict=True):
        wrapper = demo_registry.get(row.parent_mlalgorithm)
        assert wrapper.compute_prediction(row.input_data)["probability"] == pytest.approx(
            prediction["probability"], abs=1e-12
        )


def test_random_arms_follow_the_shares() -> None:
    from apps.endpoints.serving.pipeline import random_arms

    arms = random_arms(20_000, [0.8, 0.2])
    assert set(arms.tolist()) == {0, 1}
    assert abs(arms.mean() - 0.2) < 0.02  # 0.2 +- 7 standard errors


def test_the_csv_download_round_trips(api: APIClient, demo_registry: MLRegistry) -> None:
    text = adult_csv(12)
    response = upload(api, text, URL + "?format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    out = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    original = list(csv.reader(io.StringIO(text)))
    assert out[0] == [*original[0], "request_id", "label", "probability", "feedback_token"]
    assert [row[:-4] for row in out[1:]] == original[1:]
    for row in out[1:]:
        logged = MLRequest.objects.get(pk=int(row[-4]))
        assert logged.response == row[-3]
        assert logged.full_response["probability"] == float(row[-2])
        assert row[-1] == feedback.token_for(logged.pk)
    again = upload(api, text, HTTP_ACCEPT="text/csv")
    assert again["Content-Type"].startswith("text/csv")


# Cells a spreadsheet would run as formulas (OWASP's list: =, +, -, @, tab, CR), as sent and
# as a CSV answer gives them back; numbers and other text stay as they were.
FORMULA_CELLS = {
    "=1+1": "'=1+1",
    "@SUM(A1)": "'@SUM(A1)",
    "+x": "'+x",
    "\tcmd": "'\tcmd",
    "-": "'-",
    "-3.5": "-3.5",
    "+1": "+1",
    "-1e3": "-1e3",
    "normal text": "normal text",
    "a=b": "a=b",
}
# ...and cells only a file with quotes can hold (answered through the csv module).
QUOTED_FORMULA_CELLS = {
    **FORMULA_CELLS,
    "\rcmd": "'\rcmd",
    '=HYPERLINK("http://x","y")': '\'=HYPERLINK("http://x","y")',
}


def formula_csv(cells: dict[str, str]) -> str:
    """Adult rows with an extra column (named like a formula) holding ``cells``; the text
    cells quoted when one of them needs it (the csv module does not quote a lone CR)."""
    from apps.ml.tests.factories import adult_frame

    frame = adult_frame("adult.test").head(len(cells)).copy()
    frame["=cmd()"] = list(cells)
    quoted = any('"' in cell or "\r" in cell for cell in cells)
    text: str = frame.to_csv(
        index=False, quoting=csv.QUOTE_NONNUMERIC if quoted else csv.QUOTE_MINIMAL
    )
    return text


@pytest.mark.parametrize("cells", [FORMULA_CELLS, QUOTED_FORMULA_CELLS], ids=["plain", "quoted"])
@pytest.mark.parametrize("escape", [True, False], ids=["escaped", "CSV_ESCAPE_FORMULAS off"])
def test_cells_a_spreadsheet_would_run_as_formulas_are_escaped_in_the_csv_answer(
    api: APIClient,
    demo_registry: MLRegistry,
    settings: Any,
    cells: dict[str, str],
    escape: bool,
) -> None:
    settings.CSV_ESCAPE_FORMULAS = escape
    text = formula_csv(cells)
    assert ('"' in text) == (cells is QUOTED_FORMULA_CELLS)  # each path of csv_stream
    response = upload(api, text, HTTP_ACCEPT="text/csv")
    assert response.status_code == 200, response.content
    out = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    original = list(csv.reader(io.StringIO(text)))
    assert out[0][-5] == ("'=cmd()" if escape else "=cmd()")
    assert [row[-5] for row in out[1:]] == list(cells.values() if escape else cells)
    assert out[0][:-5] == original[0][:-1]
    assert [row[:-5] for row in out[1:]] == [row[:-1] for row in original[1:]]
    assert [float(row[-2]) for row in out[1:]]  # the answer's numbers are numbers


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "file: The submitted file is empty."),
        (b"\n\n", "The file is empty."),
        (",".join(schema.FEATURES).encode() + b"\n", "has a header but no rows"),
        (b"age;workclass;fnlwgt\n1;2;3\n", "seems to use ';'"),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "binary, not CSV"),
        (b"39,State-gov,77516\n", "must be a header"),
        (b"age,workclass\n39,Private\n", "Missing feature columns: fnlwgt"),
        (b"age,age\n1,2\n", "more than once: age"),
    ],
)
def test_bad_files_get_a_400_that_says_what_is_wrong(
    api: APIClient, demo_registry: MLRegistry, content: bytes, fragment: str
) -> None:
    assert_error(upload(api, content), 400, fragment)


def test_ragged_rows_are_refused_with_their_line(api: APIClient, demo_registry: MLRegistry) -> None:
    lines = adult_csv(6).splitlines()
    longer = [*lines[:3], lines[3] + ",surplus", *lines[4:]]
    assert_error(upload(api, "\n".join(longer)), 400, "Line 4 has 17 fields; the header has 16")
    shorter = [*lines[:5], lines[5].rsplit(",", 2)[0], *lines[6:]]
    assert_error(upload(api, "\n".join(shorter)), 400, "Line 6 has 14 fields")


def test_undecodable_text_and_unknown_values_are_400s(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    text = adult_csv(4)
    assert_error(
        upload(api, text.replace("Private", "Priv\xe9").encode("latin-1")), 400, "not UTF-8"
    )
    assert_error(
        upload(api, text.replace("Private", "Mars")), 400, "'Mars' is not a valid workclass"
    )
    assert_error(
        upload(api, text.replace("<=50K.", "maybe")),
        400,
        "column 'income': 'maybe' is not a class of this model",
    )
    assert_error(upload(api, 'age,"unclosed\n1,2\n'), 400, "header is not valid CSV")
    lines = text.splitlines()
    lines[2] = lines[2].replace("Private", '"Private')
    assert_error(upload(api, "\n".join(lines)), 400, "not valid CSV")


def test_size_and_row_limits_answer_413(
    api: APIClient, demo_registry: MLRegistry, settings: Any
) -> None:
    text = adult_csv(30)
    settings.BATCH_MAX_ROWS = 29
    settings.BATCH_CHUNK_ROWS = 8
    error = assert_error(upload(api, text), 413, "more than 29 rows")
    assert error["code"] == "too_large"
    settings.BATCH_MAX_ROWS = 1000
    settings.BATCH_MAX_UPLOAD_BYTES = 1000
    assert_error(upload(api, text), 413, "larger than 1000 bytes")


def test_the_endpoint_may_be_left_out_only_when_there_is_one(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    assert_error(upload(api, adult_csv(3), URL + "?endpoint=nope"), 404, "No endpoint named 'nope'")
    assert stream_json(upload(api, adult_csv(3)))["count"] == 3
    from apps.endpoints.models import Endpoint

    Endpoint.objects.create(name="another", owner="x")
    MLRequest.objects.all().delete()
    assert_error(upload(api, adult_csv(3)), 400, "more than one endpoint")
    assert stream_json(upload(api, adult_csv(3), URL + "?endpoint=income_classifier"))["count"] == 3


def test_version_and_status_select_as_in_predict(api: APIClient, demo_registry: MLRegistry) -> None:
    body = stream_json(upload(api, adult_csv(3), URL + "?status=testing&version=0.0.1"))
    assert body["algorithms"][0]["name"] == "extra trees"
    response = api.post(
        URL, {"file": SimpleUploadedFile("f.csv", adult_csv(3).encode()), "status": "testing"}
    )
    assert stream_json(response)["algorithms"][0]["name"] == "extra trees"


def test_a_missing_file_field_is_a_400(api: APIClient, demo_registry: MLRegistry) -> None:
    response = api.post(URL, {"other": "x"})
    assert response.status_code == 400
    assert "file" in response.json()["error"]["details"]


def test_the_browsable_api_offers_an_upload_form(api: APIClient, demo_registry: MLRegistry) -> None:
    page = api.get(URL, HTTP_ACCEPT="text/html")
    assert page.status_code == 405
    assert b'type="file"' in page.content and b'name="file"' in page.content


@pytest.mark.parametrize("how", [{}, {"QUERY_STRING": "format=csv"}, {"HTTP_ACCEPT": "text/csv"}])
def test_a_post_without_a_body_is_a_400_in_json(
    api: APIClient, demo_registry: MLRegistry, how: dict[str, Any]
) -> None:
    # Found by schemathesis (.ci/fuzz): with no body DRF's request.data is a plain dict,
    # not a QueryDict, and the view answered 500.
    response = api.generic("POST", URL, **how)
    assert response.status_code == 400, response.content[:500]
    assert response["Content-Type"] == "application/json"
    assert "file" in response.json()["error"]["details"]


def test_a_file_past_the_row_limit_is_refused_before_any_row_is_scored(
    api: APIClient, demo_registry: MLRegistry, settings: Any
) -> None:
    settings.BATCH_MAX_ROWS = 29
    settings.BATCH_CHUNK_ROWS = 10  # the limit is crossed in the third chunk
    wrapper = demo_registry.get(
        MLAlgorithm.objects.get(statuses__status="production", statuses__active=True)
    )
    assert isinstance(wrapper, IncomeClassifier)
    calls: list[int] = []
    original = wrapper.predict_proba

    def counting(matrix: np.ndarray) -> np.ndarray:
        calls.append(len(matrix))
        return original(matrix)

    wrapper.predict_proba = counting  # type: ignore[method-assign]  # counts the model's calls
    assert_error(upload(api, adult_csv(30)), 413, "more than 29 rows")
    quoted = adult_csv(30).replace(",Private,", ',"Private",')  # counted by the csv module
    assert '"Private"' in quoted
    assert_error(upload(api, quoted), 413, "more than 29 rows")
    assert calls == []
    assert stream_json(upload(api, adult_csv(29)))["count"] == 29  # the limit itself is fine


def _wide(columns: int, rows: int = 3) -> bytes:
    """The Adult features plus ``columns`` ignored ones (a CSV exported with everything)."""
    base = adult_csv(rows, extra=False).splitlines()
    names = ",".join(f"extra_{i}" for i in range(columns))
    cells = ",".join("0" for _ in range(columns))
    return "\n".join([f"{base[0]},{names}", *(f"{line},{cells}" for line in base[1:])]).encode()


def test_a_file_past_the_column_limit_is_a_413(
    api: APIClient, demo_registry: MLRegistry, settings: Any
) -> None:
    """Regression: a CSV of 16.6k columns burned 4 s of CPU before its 400 (a quadratic
    duplicate check); past BATCH_MAX_COLUMNS it is refused before anything is parsed."""
    settings.BATCH_MAX_COLUMNS = 100
    error = assert_error(upload(api, _wide(100)), 413, "more than 100 columns")
    assert error["code"] == "too_large"
    assert upload(api, _wide(100 - 16)).status_code == 200  # exactly at the limit


def test_a_header_longer_than_the_sniffed_block_is_read_whole(
    api: APIClient, demo_registry: MLRegistry, settings: Any
) -> None:
    """Regression: only the first 64 KB were parsed as the header; a longer one was cut."""
    settings.BATCH_MAX_COLUMNS = 20_000
    wide = _wide(8_000)
    assert wide.index(b"\n") > 64 * 1024
    body = stream_json(upload(api, wide))
    assert body["count"] == 3 and len(body["ignored_columns"]) == 8_000


def test_duplicate_columns_are_found_in_linear_time(
    api: APIClient, demo_registry: MLRegistry, settings: Any
) -> None:
    import time

    settings.BATCH_MAX_COLUMNS = 50_000
    names = [f"c{i}" for i in range(40_000)]
    text = ",".join([*names, "c7", "c9"]) + "\n" + ",".join("0" * 40_002) + "\n"
    started = time.process_time()
    error = assert_error(upload(api, text), 400, "more than once: c7, c9")
    # header.count per name took 4 s for 16.6k columns; a Counter takes milliseconds.
    assert time.process_time() - started < 2.0
    assert "c1," not in error["message"]


def test_chunks_are_bounded_by_bytes_and_parse_only_the_needed_columns(
    demo_registry: MLRegistry, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: 6,000 rows of 16.5k mostly ignored columns reached a 2.4 GB peak: a
    chunk was 10k rows whatever their width, each cell a Python string."""
    from apps.endpoints.batch.score import score_upload
    from apps.endpoints.serving import pipeline

    settings.BATCH_MAX_COLUMNS = 5_000
    settings.BATCH_CHUNK_ROWS = 10_000
    settings.BATCH_CHUNK_BYTES = 64 * 1024
    wide = _wide(2_000, rows=200)
    seen: list[tuple[int, int]] = []
    real = pipeline.encode

    def spy(batch: Any, *args: Any) -> None:
        seen.append((batch.size, len(batch.columns)))
        real(batch, *args)

    monkeypatch.setattr(pipeline, "encode", spy)
    result = score_upload(
        upload=io.BytesIO(wide), endpoint_name=None, status="production", actor=anonymous()
    )
    assert result.count == 200 and len(result.ignored_columns) == 2_000
    row_bytes = len(wide) / 200
    assert max(size for size, _ in seen) <= settings.BATCH_CHUNK_BYTES / row_bytes + 1
    assert len(seen) > 1
    assert {width for _, width in seen} == {len(schema.FEATURES) + 1}  # features + income


@pytest.mark.parametrize("quoted", [False, True])
def test_a_chunk_holds_its_bytes_even_when_wide_rows_come_together(
    demo_registry: MLRegistry, settings: Any, monkeypatch: pytest.MonkeyPatch, quoted: bool
) -> None:
    """Regression: chunks were sized by the file's average row, so narrow rows and then a
    block of wide ones put the wide block in one chunk many times BATCH_CHUNK_BYTES."""
    from apps.endpoints.batch.score import score_upload
    from apps.endpoints.serving import pipeline

    settings.BATCH_CHUNK_ROWS = 10_000
    settings.BATCH_CHUNK_BYTES = 32 * 1024
    lines = adult_csv(400, extra=False).splitlines()
    note = '"a note, with a comma"' if quoted else "a note"
    wide_cell = "x" * 2_000  # an ignored column: 100 rows of it are ~200 KB together
    rows = [f"{line},{wide_cell if 300 <= n < 400 else note}" for n, line in enumerate(lines[1:])]
    data = "\n".join([f"{lines[0]},note", *rows]).encode()
    sizes: list[int] = []
    real = pipeline.encode
    offsets = [0]

    def spy(batch: Any, *args: Any) -> None:
        sizes.append(batch.size)
        real(batch, *args)

    monkeypatch.setattr(pipeline, "encode", spy)
    result = score_upload(
        upload=io.BytesIO(data), endpoint_name=None, status="production", actor=anonymous()
    )
    assert result.count == 400 and sum(sizes) == 400
    for size in sizes:  # each chunk's rows, as bytes of the file
        offsets.append(offsets[-1] + size)
    row_bytes = [len(row) + 1 for row in rows]
    widest = max(sum(row_bytes[a:b]) for a, b in pairwise(offsets))
    assert widest <= settings.BATCH_CHUNK_BYTES * 1.05  # ~: the csv path counts characters
    # and no more chunks than needed: two neighbours always hold more than the limit
    assert len(sizes) <= 2 * sum(row_bytes) / settings.BATCH_CHUNK_BYTES + 1


def test_the_first_chunks_ramp_up_to_batch_chunk_rows(settings: Any) -> None:
    """A quarter of BATCH_CHUNK_ROWS first, then twice the last: the model starts sooner,
    and a file of BATCH_CHUNK_ROWS rows is three chunks whose stages overlap."""
    from apps.endpoints.batch import reading

    settings.BATCH_CHUNK_ROWS = 10_000
    settings.BATCH_CHUNK_BYTES = 16 * 1024 * 1024
    header_and_rows = [np.full(1 + 45_000, 100, dtype=np.intc)]
    assert reading.chunk_plan(header_and_rows) == [2_500, 5_000, 10_000, 10_000, 10_000, 7_500]
    assert reading.chunk_plan([np.full(1 + 10_000, 100, dtype=np.intc)]) == [2_500, 5_000, 2_500]
    settings.BATCH_CHUNK_ROWS = 3  # smaller than the ramp's quarter: one row first
    assert reading.chunk_plan([np.full(1 + 8, 100, dtype=np.intc)]) == [1, 2, 3, 2]
    assert reading.chunk_plan([np.full(1 + 8, 100, dtype=np.intc)], ramp=False) == [3, 3, 2]


@pytest.mark.parametrize(
    ("log_requests", "accept", "chunks"),
    [
        ("true", "application/json", [2, 4, 8, 8, 8]),
        ("true", "text/csv", [2, 4, 8, 8, 8]),
        ("false", "application/json", [2, 4, 8, 8, 8]),
        ("false", "text/csv", [8, 8, 8, 6]),
    ],
)
def test_a_file_ramps_up_where_there_is_work_to_overlap_the_model(
    api: APIClient,
    demo_registry: MLRegistry,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    log_requests: str,
    accept: str,
    chunks: list[int],
) -> None:
    """Smaller first chunks pay where a chunk's work beside the model overlaps the next
    chunk's model call: the log's rows and writes, or the JSON answer of unlogged rows
    written as they are scored. An unlogged CSV answer is written after the last chunk, so
    there whole chunks are cheaper (docs/speed.md)."""
    from apps.endpoints.serving import pipeline

    settings.BATCH_CHUNK_ROWS = 8
    sizes: list[int] = []
    real = pipeline.encode

    def spy(batch: Any, *args: Any) -> None:
        sizes.append(batch.size)
        real(batch, *args)

    monkeypatch.setattr(pipeline, "encode", spy)
    answer = upload(
        api, adult_csv(30), url=f"{URL}?log_requests={log_requests}", HTTP_ACCEPT=accept
    )
    assert answer.status_code == 200
    b"".join(answer.streaming_content)
    assert sizes == chunks


@pytest.mark.parametrize("log_requests", ["true", "false"])
def test_a_file_answers_the_same_with_the_model_in_parts(
    api: APIClient, demo_registry: MLRegistry, settings: Any, log_requests: str
) -> None:
    """Chunks of at least MODEL_PARALLEL_ROWS rows are predicted in parts on two threads
    (ml/parallel.py): the answers are those of one call a chunk, row for row."""
    from apps.ml import parallel

    text = adult_csv(200)
    parts: list[int] = []
    real = parallel.predict

    def spy(runtime: Any, encoded: Any) -> Any:
        parts.append(len(encoded))
        return real(runtime, encoded)

    answers = {}
    for threads in (1, 2):
        settings.MODEL_THREADS, settings.MODEL_PARALLEL_ROWS = threads, 20
        parts.clear()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(parallel, "predict", spy)
            body = stream_json(upload(api, text, url=f"{URL}?log_requests={log_requests}"))
        assert set(parts) == {threads}, parts
        answers[threads] = [
            (p["label"], p["probability"], p["probabilities"]) for p in body["predictions"]
        ]
    assert len(answers[1]) == 200 and answers[1] == answers[2]


@pytest.mark.parametrize("quoted", [False, True])
def test_counting_stops_past_the_row_limit(quoted: bool) -> None:
    """Regression (review): the row sizes for chunk_plan were kept for the whole file
    before its length was checked, so a file far past BATCH_MAX_ROWS held a size per row
    in memory (about 1 GB for 256 MB of one-character rows) just to be refused."""
    from apps.endpoints.batch import reading

    cell = '"1"' if quoted else "1"
    data = ("x\n" + f"{cell}\n" * 3_000_000).encode()  # past one 4 MiB block
    sizes: list[np.ndarray] = []
    counted = reading.check_field_counts(io.BytesIO(data), 1, sizes, max_rows=1_000)
    assert counted > 1_000  # past the limit: the caller refuses it
    assert sum(len(part) for part in sizes) < 3_000_000  # and it stopped reading
    # the control: without a limit every row is counted
    assert reading.check_field_counts(io.BytesIO(data), 1) == 3_000_000
