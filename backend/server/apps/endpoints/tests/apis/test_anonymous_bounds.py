"""Bounds for clients that do not sign in, on by default in production (DEBUG off) and off
with DEBUG on (make run): a predict rate of their own, smaller uploads, a cap on the batch
jobs (and rows) a client has queued or running; and retention for feedback revisions.

The test settings turn the bounds off (settings_test.py); each test here sets the ones it
tests, and the first checks the defaults the settings module itself gives."""

from __future__ import annotations

import io
import runpy
import threading
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from apps.core.errors import TooManyJobs
from apps.endpoints.batch import jobs, tasks
from apps.endpoints.models import BatchJob, MLRequest
from apps.endpoints.tests.apis.test_access import PREDICT, token_for
from apps.endpoints.tests.apis.test_batch_predict import adult_csv
from apps.endpoints.tests.factories import anonymous
from apps.endpoints.tests.job_factories import files_of, use_job_storage
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db

BOUNDS = (
    "ANONYMOUS_PREDICT_THROTTLE_RATE",
    "ANONYMOUS_BATCH_MAX_UPLOAD_BYTES",
    "ANONYMOUS_BATCH_JOB_MAX_UPLOAD_BYTES",
    "BATCH_JOB_MAX_ACTIVE",
    "BATCH_JOB_MAX_ACTIVE_ROWS",
    "FEEDBACK_REVISION_RETENTION_DAYS",
)


def settings_module(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    """The settings module's values in an environment without any of the bounds set."""
    for name in BOUNDS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SECRET_KEY", "x")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    values: dict[str, Any] = runpy.run_path(
        str(django_settings.BASE_DIR / "server" / "settings.py")
    )
    return values


def test_production_has_bounds_by_default_and_make_run_has_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    production = settings_module(monkeypatch, DEBUG="0")
    assert [production[name] for name in BOUNDS] == [
        "100/second",
        16 * 1024**2,
        128 * 1024**2,
        5,
        20_000_000,
        90,
    ]
    assert production["REST_FRAMEWORK"]["DEFAULT_THROTTLE_RATES"]["predict_anonymous"] == (
        "100/second"
    )
    laptop = settings_module(monkeypatch, DEBUG="1")
    assert [laptop[name] for name in BOUNDS] == [None, 0, 0, 0, 0, 90]
    # Set, they hold under DEBUG too; set empty (or 0), they are off in production too.
    assert (
        settings_module(monkeypatch, DEBUG="1", BATCH_JOB_MAX_ACTIVE="3")["BATCH_JOB_MAX_ACTIVE"]
        == 3
    )
    unbounded = settings_module(monkeypatch, DEBUG="0", ANONYMOUS_PREDICT_THROTTLE_RATE="")
    assert unbounded["ANONYMOUS_PREDICT_THROTTLE_RATE"] is None


@pytest.fixture
def anonymous_rate(monkeypatch: pytest.MonkeyPatch) -> Any:
    # DRF reads the rates when the class is defined; set them as a deployment would.
    rates = {"predict": None, "management": None, "predict_anonymous": "2/minute"}
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", rates)
    cache.clear()
    yield rates
    cache.clear()


def predict(client: APIClient) -> int:
    return int(client.post(PREDICT, SAMPLE_RECORD, format="json").status_code)


def test_an_anonymous_client_has_a_rate_of_its_own_and_a_signed_in_one_does_not(
    demo_registry: MLRegistry, anonymous_rate: Any, django_user_model: Any
) -> None:
    stranger = APIClient(REMOTE_ADDR="203.0.113.7")
    assert [predict(stranger) for _ in range(3)] == [200, 200, 429]
    refused = stranger.post(PREDICT, SAMPLE_RECORD, format="json")
    assert refused.json()["error"]["code"] == "throttled" and int(refused["Retry-After"]) > 0
    # The same address with a token is counted as its user, not as the address: the
    # service is open, and reads credentials where a request carries some.
    signed_in = APIClient(REMOTE_ADDR="203.0.113.7")
    signed_in.credentials(HTTP_AUTHORIZATION=f"Token {token_for(django_user_model, 'u')}")
    assert [predict(signed_in) for _ in range(4)] == [200] * 4
    assert MLRequest.objects.count() == 6
    assert MLRequest.objects.exclude(user=None).count() == 4  # logged as the user's
    # A credential that is wrong is refused rather than ignored.
    wrong = APIClient(REMOTE_ADDR="203.0.113.8")
    wrong.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert predict(wrong) == 401


def test_the_anonymous_rate_covers_the_batch_and_feedback_routes_too(
    demo_registry: MLRegistry, anonymous_rate: Any
) -> None:
    client = APIClient(REMOTE_ADDR="203.0.113.9")
    upload = {"file": SimpleUploadedFile("f.csv", adult_csv(3).encode())}
    assert client.post("/api/v1/batch-predict", upload).status_code == 200
    assert predict(client) == 200
    served = client.post("/api/v1/batch-predict", {"file": SimpleUploadedFile("f.csv", b"x")})
    assert served.status_code == 429


def test_anonymous_uploads_are_smaller_than_signed_in_ones(
    demo_registry: MLRegistry, settings: Any, django_user_model: Any
) -> None:
    text = adult_csv(20).encode()
    settings.ANONYMOUS_BATCH_MAX_UPLOAD_BYTES = len(text) - 1
    stranger = APIClient()
    refused = stranger.post("/api/v1/batch-predict", {"file": SimpleUploadedFile("f.csv", text)})
    assert refused.status_code == 413
    message = refused.json()["error"]["message"]
    assert "ANONYMOUS_BATCH_MAX_UPLOAD_BYTES" in message and "send a token" in message
    assert MLRequest.objects.count() == 0
    signed_in = APIClient()
    signed_in.credentials(HTTP_AUTHORIZATION=f"Token {token_for(django_user_model, 'u')}")
    served = signed_in.post("/api/v1/batch-predict", {"file": SimpleUploadedFile("f.csv", text)})
    assert served.status_code == 200, served.content
    # An anonymous limit above the general one changes nothing: the smaller applies.
    settings.ANONYMOUS_BATCH_MAX_UPLOAD_BYTES = settings.BATCH_MAX_UPLOAD_BYTES + 1
    assert (
        stranger.post(
            "/api/v1/batch-predict", {"file": SimpleUploadedFile("f.csv", text)}
        ).status_code
        == 200
    )


# -- jobs ----------------------------------------------------------------------------------


@pytest.fixture
def held_jobs(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Jobs stay queued (no task is sent): what a busy deployment looks like."""
    monkeypatch.setattr(tasks, "send_pieces", lambda job_id, count: None)
    return use_job_storage(settings, tmp_path / "batch-jobs")


def submit(client: APIClient, rows: int = 20) -> Any:
    upload = SimpleUploadedFile("adult.csv", adult_csv(rows).encode(), "text/csv")
    return client.post("/api/v1/batch-jobs", {"file": upload})


def test_a_client_may_have_so_many_jobs_queued_or_running(
    demo_registry: MLRegistry, settings: Any, held_jobs: Path, django_user_model: Any
) -> None:
    settings.BATCH_JOB_MAX_ACTIVE = 2
    stranger = APIClient(REMOTE_ADDR="203.0.113.7")
    assert [submit(stranger).status_code for _ in range(2)] == [202, 202]
    stored = files_of(held_jobs)
    refused = submit(stranger)
    assert refused.status_code == 429, refused.content
    error = refused.json()["error"]
    assert error["code"] == "too_many_jobs" and "BATCH_JOB_MAX_ACTIVE" in error["message"]
    assert error["details"] == {"active_jobs": 2, "limit": 2}
    assert BatchJob.objects.count() == 2 and files_of(held_jobs) == stored  # nothing kept
    # Another address, and a user (counted by user, from any address), have their own.
    assert submit(APIClient(REMOTE_ADDR="203.0.113.8")).status_code == 202
    user = APIClient(REMOTE_ADDR="203.0.113.7")
    user.credentials(HTTP_AUTHORIZATION=f"Token {token_for(django_user_model, 'u')}")
    assert [submit(user).status_code for _ in range(3)] == [202, 202, 429]
    # A job that ended frees its place.
    jobs.cancel(BatchJob.objects.filter(client="anonymous:203.0.113.7").first())  # type: ignore[arg-type]
    assert submit(stranger).status_code == 202


def test_and_so_many_rows(demo_registry: MLRegistry, settings: Any, held_jobs: Path) -> None:
    settings.BATCH_JOB_MAX_ACTIVE_ROWS = 30
    stranger = APIClient(REMOTE_ADDR="203.0.113.7")
    assert submit(stranger, 20).status_code == 202
    refused = submit(stranger, 11)
    assert refused.status_code == 429
    assert refused.json()["error"]["details"] == {"active_rows": 20, "rows": 11, "limit": 30}
    assert submit(stranger, 10).status_code == 202


def test_anonymous_job_uploads_are_smaller_too(
    demo_registry: MLRegistry, settings: Any, held_jobs: Path
) -> None:
    settings.ANONYMOUS_BATCH_JOB_MAX_UPLOAD_BYTES = 100
    refused = submit(APIClient())
    assert refused.status_code == 413
    assert "ANONYMOUS_BATCH_JOB_MAX_UPLOAD_BYTES" in refused.json()["error"]["message"]
    assert not BatchJob.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_submits_at_the_same_instant_cannot_all_pass_the_cap(
    demo_registry: MLRegistry, settings: Any, held_jobs: Path
) -> None:
    settings.BATCH_JOB_MAX_ACTIVE = 1
    start = threading.Barrier(4)
    outcomes: list[str] = []

    def one() -> None:
        try:
            start.wait(10)
            jobs.submit(
                upload=io.BytesIO(adult_csv(5).encode()),
                file_name="adult.csv",
                endpoint_name=None,
                status="production",
                version=None,
                log_requests=False,
                target_column=None,
                actor=anonymous("203.0.113.7"),
                send=lambda job_id, pieces: None,
            )
            outcomes.append("queued")
        except TooManyJobs:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["queued", "refused", "refused", "refused"]
    assert BatchJob.objects.count() == 1
