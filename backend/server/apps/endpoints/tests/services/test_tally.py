"""The feedback tally (tally.py) stays equal to a scan of the request log, whichever way
feedback is written: single PUTs, revisions, files of feedback, batch files with labels,
deletions; for a classifier and a regressor, and with writers at the same time."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
from typing import Any

import pytest
import skops.io
from django.contrib.auth.models import AnonymousUser
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction
from rest_framework.test import APIClient

from apps.endpoints import policy
from apps.endpoints.catalogue.register import register_model
from apps.endpoints.experiments import ab_testing
from apps.endpoints.models import FeedbackTally, MLAlgorithm, MLRequest
from apps.endpoints.serving import bulk, feedback, tally
from apps.endpoints.serving.selectors import (
    FeedbackCounts,
    feedback_counts,
    feedback_counts_by_scan,
)
from apps.endpoints.tests.factories import algorithm
from apps.ml.registry import MLRegistry
from apps.ml.tests import models
from apps.ml.tests.factories import SAMPLE_RECORD, adult_frame

INCOME = "/api/v1/income_classifier/predict"
DIABETES = "/api/v1/diabetes/predict"


def assert_tally_is_the_scan() -> list[FeedbackCounts]:
    """The tally as /metrics reads it equals the aggregate of the log it replaced: counts
    and labels exactly, sums of errors to rounding (they were added in another order)."""
    tallied, scanned = feedback_counts(), feedback_counts_by_scan()

    def exact(counts: FeedbackCounts) -> FeedbackCounts:
        return dataclasses.replace(counts, absolute_error=0.0)

    assert [exact(c) for c in tallied] == [exact(c) for c in scanned]
    assert [c.absolute_error for c in tallied] == pytest.approx(
        [c.absolute_error for c in scanned], rel=1e-9, abs=1e-9
    )
    return scanned


def register_diabetes() -> MLAlgorithm:
    buffer = io.BytesIO()
    skops.io.dump(models.diabetes_regressor(), buffer)
    buffer.seek(0)
    return register_model(
        artifact=buffer, file_name="d.skops", endpoint_name="diabetes", name="gb", version="1",
        status="production", target_column="progression",
    ).algorithm  # fmt: skip


def diabetes_records(rows: range) -> tuple[list[dict[str, Any]], list[float]]:
    x, y = models.diabetes()
    records = json.loads(x.iloc[list(rows)].to_json(orient="records"))
    return records, [float(v) for v in y[list(rows)]]


def served(api: APIClient, url: str, record: dict[str, Any]) -> dict[str, Any]:
    response = api.post(url, record, format="json")
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


def put(api: APIClient, answer: dict[str, Any], value: object) -> None:
    body = {"feedback": value, "feedback_token": answer["feedback_token"]}
    response = api.put(f"/api/v1/mlrequests/{answer['request_id']}", body, format="json")
    assert response.status_code == 200, response.content


def send_file(api: APIClient, rows: list[tuple[dict[str, Any], object]]) -> None:
    text = "request_id,feedback_token,feedback\n" + "".join(
        f"{a['request_id']},{a['feedback_token']},{value}\n" for a, value in rows
    )
    response = api.post("/api/v1/feedback", {"file": SimpleUploadedFile("f.csv", text.encode())})
    assert response.status_code == 200, response.content
    assert response.json()["refused_count"] == 0


def batch(api: APIClient, text: str, query: str) -> list[dict[str, Any]]:
    upload = SimpleUploadedFile("rows.csv", text.encode(), "text/csv")
    response: Any = api.post(f"/api/v1/batch-predict{query}", {"file": upload})
    assert response.status_code == 200, getattr(response, "content", b"")[:500]
    predictions: list[dict[str, Any]] = json.loads(b"".join(response.streaming_content))[
        "predictions"
    ]
    return predictions


def flip(label: str) -> str:
    return ">50K" if label == "<=50K" else "<=50K"


@pytest.mark.django_db
def test_the_tally_equals_a_scan_of_the_log_after_every_kind_of_feedback_write(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    register_diabetes()
    records, truths = diabetes_records(range(8))
    adult = [served(api, INCOME, SAMPLE_RECORD) for _ in range(8)]
    diabetes = [served(api, DIABETES, record) for record in records]
    assert assert_tally_is_the_scan() == []

    # Single feedback: right and wrong labels, numbers.
    for answer, label in zip(adult[:4], ["<=50K", ">50K", ">50K.", "<=50K"], strict=True):
        put(api, answer, label)
    for answer, number in zip(diabetes[:4], truths, strict=False):
        put(api, answer, number)
    assert_tally_is_the_scan()

    # Revisions take the old value out; the same value again changes nothing.
    put(api, adult[0], flip("<=50K"))
    put(api, adult[1], ">50K")
    put(api, diabetes[0], truths[0] + 25.5)
    put(api, diabetes[1], str(truths[1]))
    assert_tally_is_the_scan()

    # A file of feedback: new values and revisions, both algorithms in one file.
    send_file(
        api,
        [
            *((a, v) for a, v in zip(adult[4:], ["<=50K", ">50K", "<=50K", ">50K"], strict=True)),
            (adult[2], "<=50K"),
            *((a, v + 1) for a, v in zip(diabetes[4:], truths[4:], strict=True)),
            (diabetes[2], 0),
        ],
    )
    assert_tally_is_the_scan()

    # Batch files whose label column becomes feedback: one algorithm, A/B arms, a regressor.
    frame = adult_frame("adult.test").head(30)
    labelled = batch(api, frame.to_csv(index=False), "?endpoint=income_classifier")
    rf, et = (
        MLAlgorithm.objects.get(name="random forest"),
        MLAlgorithm.objects.get(name="extra trees"),
    )
    ab_testing.create(title="t", created_by="t", parent_mlalgorithm_1=rf, parent_mlalgorithm_2=et)
    batch(api, frame.head(20).to_csv(index=False), "?endpoint=income_classifier&status=ab_testing")
    x, y = models.diabetes()
    numbers = batch(
        api, x.head(20).assign(progression=y[:20]).to_csv(index=False), "?endpoint=diabetes"
    )
    assert_tally_is_the_scan()

    # Feedback on batch rows replaces the file's labels.
    send_file(api, [(p, flip(p["label"])) for p in labelled[:10]])
    send_file(api, [(p, 100.0) for p in numbers[:10]])
    assert_tally_is_the_scan()

    # Deleting requests (the admin's delete) takes their feedback out.
    gone = [adult[0]["request_id"], diabetes[0]["request_id"], numbers[-1]["request_id"]]
    assert feedback.delete_requests(MLRequest.objects.filter(pk__in=gone)) == 3
    scanned = assert_tally_is_the_scan()

    assert {c.task for c in scanned} == {"classification", "regression"}
    assert sum(c.given for c in scanned) == MLRequest.objects.filter(feedback__isnull=False).count()
    regressor = next(c for c in scanned if c.task == "regression")
    assert regressor.given == 8 + 20 - 2 and regressor.absolute_error > 0
    forest = next(c for c in scanned if c.name == "random forest")
    assert 0 < forest.correct < forest.given


@pytest.mark.django_db
def test_a_revision_moves_a_regressors_error_from_the_old_value_to_the_new(
    api: APIClient, registry: MLRegistry
) -> None:
    register_diabetes()
    [record], _ = diabetes_records(range(1))
    answer = served(api, DIABETES, record)
    predicted = answer["prediction"]
    put(api, answer, predicted + 10)
    put(api, answer, predicted - 3)
    [counts] = feedback_counts()
    assert (counts.given, counts.correct) == (1, 0)
    assert counts.absolute_error == pytest.approx(3, abs=1e-9)


@pytest.mark.django_db
def test_rows_written_with_feedback_outside_a_batch_are_counted(registry: MLRegistry) -> None:
    alg = algorithm(registry)
    labelled = bulk.LogRow("{}", "{}", "<=50K", "<=50K", alg.pk, None, None, "test")
    wrong = bulk.LogRow("{}", "{}", "<=50K", ">50K", alg.pk, None, None, "test")
    bulk.insert_request(labelled)
    with transaction.atomic():
        bulk.insert_requests([labelled, wrong, labelled._replace(feedback=None)])
    [counts] = assert_tally_is_the_scan()
    assert (counts.given, counts.correct) == (3, 2)


@pytest.mark.django_db
def test_recount_rebuilds_a_tally_that_drifted(api: APIClient, demo_registry: MLRegistry) -> None:
    for value in ("<=50K", ">50K"):
        put(api, served(api, INCOME, SAMPLE_RECORD), value)
    assert tally.recount() == 0
    FeedbackTally.objects.update(given=99)
    FeedbackTally.objects.create(algorithm=MLAlgorithm.objects.get(name="extra trees"), given=1)
    assert tally.recount() == 2
    [counts] = assert_tally_is_the_scan()
    assert counts.given == 2
    assert FeedbackTally.objects.count() == 1


@pytest.mark.django_db(transaction=True)  # autocommit, as outside any atomic block
def test_save_refuses_to_run_outside_the_feedbacks_transaction() -> None:
    changes = tally.Changes()
    changes.replace(
        request_id=1, algorithm_id=1, response="a", old=None, new="a", task="classification"
    )
    with pytest.raises(RuntimeError, match="transaction"):
        tally.save(changes)


@pytest.mark.django_db(transaction=True)  # real commits, seen by each thread's connection
def test_feedback_given_at_the_same_time_is_all_counted(registry: MLRegistry) -> None:
    """Eight clients give (then revise) feedback for one algorithm at once. A tally read,
    incremented and written back would lose some of their counts on PostgreSQL."""
    alg = algorithm(registry)
    row = bulk.LogRow("{}", "{}", "<=50K", None, alg.pk, None, None, None)
    with transaction.atomic():
        ids = bulk.insert_requests([row] * 48).tolist()
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def client(mine: list[int]) -> None:
        actor = policy.Actor(user=AnonymousUser(), address="10.0.0.1")
        try:
            start.wait(timeout=10)
            for value in (">50K", "<=50K"):
                for pk in mine:
                    token = feedback.token_for(pk)
                    feedback.give(request_id=pk, value=value, token=token, actor=actor)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(ids[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    [counts] = assert_tally_is_the_scan()
    assert (counts.given, counts.correct) == (48, 48)
