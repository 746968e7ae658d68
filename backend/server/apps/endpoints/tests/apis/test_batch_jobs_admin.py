"""Batch jobs in the Django admin: watched, cancelled, deleted with their files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.endpoints.models import BatchJob, MLRequest
from apps.endpoints.tests.factories import operator, sent
from apps.endpoints.tests.job_factories import files_of, job_in, use_job_storage
from apps.ml.registry import MLRegistry

pytestmark = pytest.mark.django_db
LIST = "/admin/endpoints/batchjob/"
STATES = ["queued", "running", "succeeded", "failed", "cancelled"]


@pytest.fixture(autouse=True)
def job_storage(settings: Any, tmp_path: Path) -> Path:
    return use_job_storage(settings, tmp_path / "batch-jobs")


@pytest.fixture
def admin_client_(client: Client, django_user_model: type[User]) -> Client:
    user = django_user_model.objects.create_superuser("admin", "a@example.com", "pw")
    client.force_login(user)
    return client


def logged_in(client: Client, permissions: list[str]) -> Client:
    client.force_login(operator(permissions=permissions))
    return client


def bars(page: str) -> list[str]:
    return re.findall(r'<progress value="([\d.]+)" max="100"', page)


def test_the_list_shows_every_state_with_its_progress_and_the_result_of_a_success(
    admin_client_: Client, demo_registry: MLRegistry, django_user_model: type[User]
) -> None:
    alice = django_user_model.objects.create_user("alice")
    made = {state: job_in(state, user=alice if state == "running" else None) for state in STATES}
    response = admin_client_.get(LIST)
    assert response.status_code == 200
    page = response.content.decode()
    listed = {job.pk: job for job in response.context["cl"].result_list}
    assert sorted(listed) == sorted(job.pk for job in made.values())
    # newest first: cancelled, failed after its first piece (7 of 20 rows), succeeded,
    # running (its first piece done), queued
    assert bars(page) == ["0.0", "35.0", "100.0", "35.0", "0.0"]
    assert "35.0%" in page and "7 / 20" in page and "20 / 20" in page
    assert "alice" in page and "anonymous:127.0.0.1" in page  # the submitter: user or client
    succeeded = made["succeeded"]
    links = re.findall(r'href="([^"]+/result/)"', page)
    assert links == [f"{LIST}{succeeded.pk}/result/"]  # only where there is one
    result = admin_client_.get(links[0])
    assert result.status_code == 200 and result["Content-Type"] == "text/csv"
    assert len(result.getvalue().decode().splitlines()) == 21
    sent(result)
    assert admin_client_.get(f"{LIST}{made['running'].pk}/result/").status_code == 409
    for state, job in made.items():
        filtered = admin_client_.get(f"{LIST}?state={state}")
        assert [j.pk for j in filtered.context["cl"].result_list] == [job.pk], state
        detail = admin_client_.get(f"{LIST}{job.pk}/change/")
        assert detail.status_code == 200 and len(bars(detail.content.decode())) == 1, state
    dates = next(f for f in response.context["cl"].filter_specs if f.field_path == "created_at")
    today = next(c for c in dates.choices(response.context["cl"]) if c["display"] == "Today")
    assert len(admin_client_.get(LIST + today["query_string"]).context["cl"].result_list) == 5


def test_the_list_reads_a_fixed_number_of_queries_whatever_the_jobs(
    admin_client_: Client, demo_registry: MLRegistry, django_assert_max_num_queries: Any
) -> None:
    for state in STATES:
        job_in(state)
    admin_client_.get(LIST)  # the session and the permissions, cached
    with django_assert_max_num_queries(8) as few:
        admin_client_.get(LIST)
    for state in STATES:
        job_in(state)
    with django_assert_max_num_queries(len(few.captured_queries)):
        admin_client_.get(LIST)


def test_nobody_adds_or_edits_a_job_by_hand(
    admin_client_: Client, demo_registry: MLRegistry
) -> None:
    job = job_in("queued")
    assert admin_client_.get(f"{LIST}add/").status_code == 403
    detail = admin_client_.get(f"{LIST}{job.pk}/change/").content.decode()
    assert 'name="_save"' not in detail
    admin_client_.post(f"{LIST}{job.pk}/change/", {"state": "succeeded", "rows_done": 20})
    job.refresh_from_db()
    assert job.state == "queued" and job.rows_done == 0


def test_cancel_cancels_unfinished_jobs_takes_back_their_files_and_skips_ended_ones(
    client: Client, demo_registry: MLRegistry, job_storage: Path
) -> None:
    queued, running = job_in("queued"), job_in("running", log_requests=True)
    succeeded = job_in("succeeded")
    assert MLRequest.objects.count() == 7  # the running job's first piece
    operator_ = logged_in(client, ["view_batchjob", "change_batchjob"])
    response = operator_.post(
        LIST,
        {"action": "cancel_jobs", "_selected_action": [queued.pk, running.pk, succeeded.pk]},
        follow=True,
    )
    assert response.status_code == 200
    notes = [str(m) for m in response.context["messages"]]
    assert notes == [
        f"Cancelled batch jobs: {queued.pk}, {running.pk}.",
        f"Skipped batch jobs that had already ended: {succeeded.pk} (succeeded).",
    ]
    states = dict(BatchJob.objects.values_list("pk", "state"))
    assert states == {queued.pk: "cancelled", running.pk: "cancelled", succeeded.pk: "succeeded"}
    assert MLRequest.objects.count() == 0  # the cancelled job's log rows taken back
    assert files_of(job_storage) == [f"jobs/{succeeded.pk}/result.csv"]


def test_cancel_needs_the_change_permission(client: Client, demo_registry: MLRegistry) -> None:
    job = job_in("queued")
    viewer = logged_in(client, ["view_batchjob"])
    page = viewer.get(LIST)
    assert page.status_code == 200 and "cancel_jobs" not in page.content.decode()
    viewer.post(LIST, {"action": "cancel_jobs", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.state == "queued"


def test_deleting_jobs_deletes_their_files_and_cancels_a_running_one_first(
    admin_client_: Client, demo_registry: MLRegistry, job_storage: Path
) -> None:
    running = job_in("running", log_requests=True)
    succeeded = job_in("succeeded", log_requests=True)
    kept = job_in("queued")
    assert MLRequest.objects.count() == 7 + 20
    assert len(files_of(job_storage)) == 4  # three inputs (one with a piece), one result
    response = admin_client_.post(
        LIST,
        {
            "action": "delete_selected",
            "_selected_action": [running.pk, succeeded.pk],
            "post": "yes",
        },
        follow=True,
    )
    assert response.status_code == 200
    assert list(BatchJob.objects.values_list("pk", flat=True)) == [kept.pk]
    assert files_of(job_storage) == [kept.input_name]
    # the running job's rows taken back, as a cancel does; the succeeded job's served rows stay
    assert MLRequest.objects.count() == 20
    one = admin_client_.post(f"{LIST}{kept.pk}/delete/", {"post": "yes"}, follow=True)
    assert one.status_code == 200
    assert not BatchJob.objects.exists() and files_of(job_storage) == []
    assert [p.name for p in job_storage.rglob("*")] == ["jobs"]  # the jobs' folders too


def test_the_result_is_for_staff_who_may_view_jobs(
    client: Client, demo_registry: MLRegistry, django_user_model: type[User]
) -> None:
    job = job_in("succeeded")
    url = f"{LIST}{job.pk}/result/"
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(operator("clerk", permissions=["view_mlrequest"]))
    assert client.get(url).status_code == 404
    client.force_login(operator("viewer", permissions=["view_batchjob"]))
    downloaded = sent(client.get(url))
    assert downloaded.status_code == 200
    assert client.get(f"{LIST}{job.pk + 1}/result/").status_code == 404
