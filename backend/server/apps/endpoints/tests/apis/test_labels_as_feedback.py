"""A file's label column is feedback only where its uploader may give feedback
(``FEEDBACK_ACCESS``, ``policy.feedback_refusal``): the same rule as for a single
feedback, a feedback file and the admin. Regression: with ``FEEDBACK_ACCESS=staff`` an
anonymous batch-predict with a label column wrote 1,000 feedbacks into a running A/B
test, and turned its report significant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.endpoints.batch import tasks
from apps.endpoints.experiments import ab_testing
from apps.endpoints.models import BatchJob, MLAlgorithm, MLRequest
from apps.endpoints.tests.apis.test_batch_predict import adult_csv, stream_json, upload
from apps.endpoints.tests.factories import operator
from apps.endpoints.tests.job_factories import use_job_storage
from apps.ml.registry import MLRegistry

pytestmark = pytest.mark.django_db


@pytest.fixture
def abtest(demo_registry: MLRegistry) -> Any:
    rf, et = MLAlgorithm.objects.order_by("id")
    return ab_testing.create(
        title="t", created_by="tests", parent_mlalgorithm_1=rf, parent_mlalgorithm_2=et
    )


def test_an_anonymous_files_labels_are_not_feedback_where_staff_give_it(
    api: APIClient, abtest: Any, settings: Any
) -> None:
    settings.FEEDBACK_ACCESS = "staff"
    body = stream_json(upload(api, adult_csv(40), "/api/v1/batch-predict?status=ab_testing"))
    assert body["count"] == 40
    assert body["labelled"] == 40 and body["accuracy"] is not None  # still scored
    assert body["labels_recorded"] is False
    assert "FEEDBACK_ACCESS=staff" in body["labels_note"]
    assert not MLRequest.objects.filter(feedback__isnull=False).exists()
    summary = ab_testing.evaluate(abtest)
    assert [arm["with_feedback"] for arm in summary["arms"]] == [0, 0]


def test_staff_files_labels_are_feedback_there(abtest: Any, settings: Any) -> None:
    settings.FEEDBACK_ACCESS = "staff"
    client = APIClient()
    client.force_authenticate(operator())
    body = stream_json(upload(client, adult_csv(10), "/api/v1/batch-predict?status=ab_testing"))
    assert body["labels_recorded"] is True and body["labels_note"] is None
    assert MLRequest.objects.filter(feedback__isnull=False).count() == 10
    by = set(MLRequest.objects.values_list("feedback_by", flat=True))
    assert by == {"user:operator"}  # the uploader's credentials are read, as for jobs


@pytest.mark.parametrize(("access", "recorded"), [("token", True), ("authenticated", False)])
def test_the_default_and_a_login_rule_for_an_anonymous_file(
    api: APIClient, demo_registry: MLRegistry, settings: Any, access: str, recorded: bool
) -> None:
    settings.FEEDBACK_ACCESS = access
    body = stream_json(upload(api, adult_csv(5)))
    assert body["labels_recorded"] is recorded
    assert MLRequest.objects.filter(feedback__isnull=False).count() == (5 if recorded else 0)


@pytest.mark.django_db(transaction=True)
def test_a_jobs_labels_follow_the_same_rule(
    api: APIClient, demo_registry: MLRegistry, settings: Any, tmp_path: Path
) -> None:
    use_job_storage(settings, tmp_path / "jobs")
    settings.FEEDBACK_ACCESS = "staff"
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = {
        "file": SimpleUploadedFile("f.csv", adult_csv(20).encode()),
        "log_requests": "true",
        "target_column": "income",
    }
    job = api.post("/api/v1/batch-jobs", data).json()
    assert job["labels_recorded"] is False
    tasks.drain()
    done = BatchJob.objects.get(pk=job["id"])
    assert done.state == "succeeded" and done.metrics["labelled"] == 20
    assert MLRequest.objects.count() == 20
    assert not MLRequest.objects.filter(feedback__isnull=False).exists()
