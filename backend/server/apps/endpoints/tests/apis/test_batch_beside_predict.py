"""A long batch upload beside single predictions, on a real (committed) database.

On SQLite a batch commits chunk by chunk, so a predict waits for one chunk's write, not the
whole upload; a failed upload takes back the chunks it committed. On PostgreSQL the upload
is one transaction, which never held predictions back (row locks)."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from apps.endpoints.batch.score import score_upload
from apps.endpoints.models import FeedbackTally, MLRequest
from apps.endpoints.serving import pipeline
from apps.endpoints.tests.apis.test_batch_predict import adult_csv, upload
from apps.endpoints.tests.factories import anonymous
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db(transaction=True)
PREDICT = "/api/v1/income_classifier/predict"


def _slow_model(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    real = pipeline.predict

    def slow(batch: Any, runtimes: Any) -> Any:
        time.sleep(seconds)
        return real(batch, runtimes)

    monkeypatch.setattr(pipeline, "predict", slow)


def test_a_predict_during_a_long_batch_answers_at_once(
    api: APIClient, demo_registry: MLRegistry, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: on SQLite a predict sent during a long upload waited for the upload's
    transaction to end (20 s, then 503 database_unavailable)."""
    settings.BATCH_CHUNK_ROWS = 5
    _slow_model(monkeypatch, 0.25)  # 10 chunks: the upload takes 2.5 s or more
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            text = adult_csv(50).encode()
            done["result"] = score_upload(
                upload=io.BytesIO(text),
                endpoint_name=None,
                status="production",
                actor=anonymous(),
            )
        except BaseException as exc:  # reported below, on the test's thread
            done["error"] = exc
        finally:
            connection.close()

    uploading = threading.Thread(target=run)
    uploading.start()
    time.sleep(0.4)  # the upload is under way
    latencies = []
    while uploading.is_alive():
        started = time.perf_counter()
        response = api.post(PREDICT, SAMPLE_RECORD, format="json")
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200, response.content
        time.sleep(0.1)
    uploading.join()
    assert "error" not in done, done.get("error")
    assert done["result"].count == 50
    assert len(latencies) >= 5, latencies  # predicts answered while the upload went on
    assert max(latencies) < 1.0, latencies
    assert MLRequest.objects.count() == 50 + len(latencies)


def test_a_bad_cell_late_in_a_long_batch_leaves_nothing_written(
    api: APIClient, demo_registry: MLRegistry, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.BATCH_CHUNK_ROWS = 5
    undone: list[int] = []
    real_undo = pipeline.LogWriter._undo

    def spy(writer: pipeline.LogWriter) -> None:
        written = writer._background.written if writer._background is not None else []
        undone.append(sum(len(ids) for ids in written))
        real_undo(writer)

    monkeypatch.setattr(pipeline.LogWriter, "_undo", spy)
    lines = adult_csv(23).splitlines()  # with the income column: feedback, in the tally
    last = lines[-1].split(",")
    last[1] = "forty"  # age
    lines[-1] = ",".join(last)
    response = upload(api, "\n".join(lines))
    assert response.status_code == 400
    assert "Line 24, column 'age'" in response.json()["error"]["message"]
    assert MLRequest.objects.count() == 0
    assert not FeedbackTally.objects.exclude(given=0).exists()
    if connection.vendor == "sqlite":  # chunks had been committed, and were taken back
        # At least the first: with two writes pending at most, the third chunk's submit
        # waited for it. How many more were written before the failure is timing.
        assert undone and undone[0] >= 5, undone
    else:  # one transaction, rolled back
        assert undone == [] or undone == [0]
    # and a good upload afterwards is whole
    response = upload(api, adult_csv(23))
    assert response.status_code == 200
    assert MLRequest.objects.count() == 23
    assert FeedbackTally.objects.get().given == 23
