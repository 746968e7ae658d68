"""/api/v1/batch-jobs in the embedded default (no broker: the web process runs the tasks on
a thread of its own), on a committed database, as a client sees it."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from apps.endpoints.batch import tasks
from apps.endpoints.models import BatchJob, MLRequest
from apps.endpoints.tests.apis.test_batch_predict import (
    QUOTED_FORMULA_CELLS,
    adult_csv,
    formula_csv,
)
from apps.endpoints.tests.factories import operator, sent
from apps.endpoints.tests.job_factories import job_in, use_job_storage
from apps.ml.registry import MLRegistry

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/batch-jobs"


@pytest.fixture(autouse=True)
def job_storage(settings: Any, tmp_path: Path) -> Path:
    return use_job_storage(settings, tmp_path / "batch-jobs")


@pytest.fixture(autouse=True)
def drained(transactional_db: None, registry: MLRegistry, job_storage: Path) -> Iterator[None]:
    """The embedded runner's thread finishes each test's jobs within the test (before the
    database is emptied: this fixture's teardown comes first): one that ran on would act
    on the next test's database. It asks for the registry and the storage the jobs run
    on so that they are torn down after it, not before: a job left queued at the end of a
    test then still finds its model. Drained after the registry was put back, such a job
    found none, and the runner tried its piece again after 1, 2 and 4 s before failing
    it: 7 s in each such test's teardown (hence the check that none failed so)."""
    yield
    tasks.drain()
    retried_out = BatchJob.objects.filter(error__code="piece_failed")
    assert not retried_out.exists(), list(retried_out.values("pk", "error"))


def submit(api: APIClient, text: str, **fields: Any) -> Any:
    data = {"file": SimpleUploadedFile("adult.csv", text.encode(), "text/csv"), **fields}
    return api.post(URL, data)


def wait(api: APIClient, url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, Any] = api.get(url, headers=headers or {}).json()
        if body["state"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"the job did not end: {body}")


def rows_of(response: Any) -> list[dict[str, str]]:
    text = b"".join(response.streaming_content).decode()
    sent(response)
    return list(csv.DictReader(io.StringIO(text)))


def test_a_job_scores_every_row_once_in_order_as_batch_predict_does(
    api: APIClient, demo_registry: MLRegistry, job_storage: Path
) -> None:
    text = adult_csv(30)
    submitted = submit(api, text, log_requests="true")
    assert submitted.status_code == 202, submitted.content
    body = submitted.json()
    assert body["state"] == "queued" and body["rows_total"] == 30
    assert submitted["Location"] == body["url"] and body["chunks_total"] == 5
    token = {"X-Job-Token": body["token"]}  # anonymous: the token reads it back
    done = wait(api, body["url"], token)
    assert done["state"] == "succeeded", done
    assert (done["rows_done"], done["percent"], done["chunks_done"]) == (30, 100.0, 5)
    assert done["metrics"]["labelled"] == 30 and 0 <= done["metrics"]["accuracy"] <= 1
    assert done["started_at"] and done["finished_at"] and done["rows_per_second"] > 0
    result = api.get(done["result_url"], headers=token)
    assert result.status_code == 200 and result["Content-Type"] == "text/csv"
    rows = rows_of(result)
    uploaded = list(csv.DictReader(io.StringIO(text)))
    assert [r["id"] for r in rows] == [r["id"] for r in uploaded]  # every row, in order
    assert all(r["age"] == u["age"] for r, u in zip(rows, uploaded, strict=True))
    # the same answers as the synchronous path, each row logged exactly once
    sync = api.post(
        "/api/v1/batch-predict",
        {"file": SimpleUploadedFile("a.csv", text.encode(), "text/csv")},
        HTTP_ACCEPT="text/csv",
    )
    assert [r["label"] for r in rows] == [r["label"] for r in rows_of(sync)]
    ids = [int(r["request_id"]) for r in rows]
    assert len(set(ids)) == 30 and MLRequest.objects.filter(pk__in=ids).count() == 30
    assert MLRequest.objects.count() == 60  # the job's 30 and batch-predict's 30
    assert [p.name for p in job_storage.rglob("*.csv")] == ["result.csv"]  # pieces removed


def test_without_log_requests_nothing_is_logged_and_the_answer_has_no_ids(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    body = submit(api, adult_csv(10)).json()
    done = wait(api, body["url"], {"X-Job-Token": body["token"]})
    assert done["state"] == "succeeded" and MLRequest.objects.count() == 0
    rows = rows_of(api.get(done["result_url"], headers={"X-Job-Token": body["token"]}))
    assert len(rows) == 10 and "request_id" not in rows[0] and rows[0]["label"]


@pytest.mark.parametrize("escape", [True, False], ids=["escaped", "CSV_ESCAPE_FORMULAS off"])
def test_cells_a_spreadsheet_would_run_as_formulas_are_escaped_in_the_result(
    api: APIClient, demo_registry: MLRegistry, settings: Any, escape: bool
) -> None:
    settings.CSV_ESCAPE_FORMULAS = escape
    cells = QUOTED_FORMULA_CELLS  # 12 rows: two pieces, each written by the worker
    body = submit(api, formula_csv(cells)).json()
    headers = {"X-Job-Token": body["token"]}
    assert wait(api, body["url"], headers)["state"] == "succeeded"
    result: Any = api.get(body["url"] + "/result", headers=headers)
    text = b"".join(result.streaming_content).decode()
    sent(result)
    header, *rows = csv.reader(io.StringIO(text))
    assert header[-3:] == [("'=cmd()" if escape else "=cmd()"), "label", "probability"]
    assert [row[-3] for row in rows] == list(cells.values() if escape else cells)


def test_what_can_be_checked_is_checked_before_anything_is_queued(
    api: APIClient, demo_registry: MLRegistry, settings: Any, job_storage: Path
) -> None:
    missing = submit(api, "age,workclass\n39,Private\n")
    assert (
        missing.status_code == 400
        and "Missing feature columns" in missing.json()["error"]["message"]
    )
    assert submit(api, adult_csv(3), endpoint="nope").status_code == 404
    assert submit(api, adult_csv(3), version="9.9").status_code == 404
    settings.BATCH_JOB_MAX_ROWS = 29
    too_many = submit(api, adult_csv(30))
    assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "too_large"
    settings.BATCH_JOB_MAX_UPLOAD_BYTES = 100
    assert submit(api, adult_csv(3)).status_code == 413
    assert BatchJob.objects.count() == 0 and not list(job_storage.rglob("*.csv"))


def test_a_bad_cell_fails_the_job_with_its_line_and_column_and_takes_back_its_rows(
    api: APIClient, demo_registry: MLRegistry, job_storage: Path
) -> None:
    lines = adult_csv(30).splitlines()
    cells = lines[25].split(",")
    cells[1] = "forty"  # age, line 26
    lines[25] = ",".join(cells)
    body = submit(api, "\n".join(lines) + "\n", log_requests="true").json()
    done = wait(api, body["url"], {"X-Job-Token": body["token"]})
    assert done["state"] == "failed"
    assert (done["error"]["line"], done["error"]["column"]) == (26, "age")
    assert "forty" in done["error"]["message"]
    assert MLRequest.objects.count() == 0  # the pieces scored before were taken back
    assert not list(job_storage.rglob("*.csv"))
    result = api.get(body["url"] + "/result", headers={"X-Job-Token": body["token"]})
    assert result.status_code == 409


def test_a_job_is_its_submitters_and_operators_and_a_404_to_anyone_else(
    api: APIClient, demo_registry: MLRegistry, django_user_model: Any
) -> None:
    alice, bob = (django_user_model.objects.create_user(n) for n in ("alice", "bob"))
    as_alice, as_bob, as_operator = APIClient(), APIClient(), APIClient()
    as_alice.force_authenticate(alice)
    as_bob.force_authenticate(bob)
    as_operator.force_authenticate(operator(permissions=["view_batchjob", "change_batchjob"]))
    body = submit(as_alice, adult_csv(5)).json()
    assert "token" not in body  # a user reads it back as itself
    url = body["url"]
    assert wait(as_alice, url)["state"] == "succeeded"
    for stranger in (as_bob, api):
        for path in (url, url + "/result"):
            assert stranger.get(path).status_code == 404
        assert stranger.post(url + "/cancel").status_code == 404
    assert api.get(url, headers={"X-Job-Token": "0" * 32}).status_code == 404
    assert as_operator.get(url).status_code == 200
    assert [j["id"] for j in as_alice.get(URL).json()["results"]] == [body["id"]]
    assert as_bob.get(URL).json()["results"] == []
    assert as_operator.get(URL + "?state=succeeded").json()["count"] == 1
    assert as_operator.get(URL + "?state=failed").json()["count"] == 0
    assert as_operator.get(URL + "?state=maybe").status_code == 400
    # an anonymous job's token is no key to a user's job
    anonymous = submit(api, adult_csv(5)).json()
    assert api.get(url, headers={"X-Job-Token": anonymous["token"]}).status_code == 404


def test_a_token_in_the_url_is_a_400_that_says_to_send_the_header(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    # A token in the URL ends up in access logs (nginx's, a proxy's): refused, not ignored,
    # which would answer a 404 that says nothing about why.
    body = submit(api, adult_csv(5)).json()
    token = body["token"]
    url = body["url"]
    wait(api, url, {"X-Job-Token": token})
    answers = [
        api.get(f"{url}?token={token}"),
        api.get(f"{url}/result?token={token}"),
        api.post(f"{url}/cancel?token={token}"),
        api.get(f"{URL}?token={token}"),
        submit(api, adult_csv(5), token=token),  # as a form field it was never read
    ]
    for answer in answers[:4]:
        assert answer.status_code == 400, answer.content
        error = answer.json()["error"]
        assert error["code"] == "invalid_input" and "X-Job-Token" in error["message"]
        assert "token" in error["details"]
    assert answers[4].status_code == 202  # a form field is no URL: not in the logs
    assert api.get(url, headers={"X-Job-Token": token}).status_code == 200  # the way


def test_the_result_downloads_whatever_a_csv_client_accepts(
    api: APIClient, demo_registry: MLRegistry
) -> None:
    """Regression: ``Accept: text/csv``, what a CSV download sends, answered 406."""
    body = submit(api, adult_csv(5)).json()
    headers = {"X-Job-Token": body["token"]}
    url = body["url"] + "/result"
    early = api.get(url, headers={**headers, "Accept": "text/csv"})  # not done yet: its error
    if early.status_code == 409:
        assert early["Content-Type"].startswith("application/json")
        assert early.json()["error"]["code"] == "conflict"
    assert wait(api, body["url"], headers)["state"] == "succeeded"
    for accept in ("text/csv", "*/*", "text/csv, application/json;q=0.5", "text/*"):
        response = api.get(url, headers={**headers, "Accept": accept})
        assert response.status_code == 200, (accept, response.status_code)
        assert response["Content-Type"].startswith("text/csv")
        assert b"".join(response.streaming_content).startswith(b"id,age,")  # type: ignore[attr-defined]
        sent(response)
    refused = api.get(url, headers={**headers, "Accept": "image/png"})
    assert refused.status_code == 406
    assert refused.json()["error"]["code"] == "not_acceptable"


def test_cancelling_another_users_job_needs_the_change_permission(
    demo_registry: MLRegistry, django_user_model: Any
) -> None:
    """Regression: staff with only ``view_batchjob`` cancelled anyone's job through the API,
    where the admin's action asks for ``change_batchjob``."""
    job = job_in(BatchJob.State.QUEUED, user=django_user_model.objects.create_user("alice"))
    viewer, canceller = APIClient(), APIClient()
    viewer.force_authenticate(operator("viewer", permissions=["view_batchjob"]))
    canceller.force_authenticate(
        operator("canceller", permissions=["view_batchjob", "change_batchjob"])
    )
    url = f"{URL}/{job.pk}"
    assert viewer.get(url).status_code == 200  # seeing it is theirs
    refused = viewer.post(url + "/cancel")
    assert refused.status_code == 403, refused.json()
    assert "change_batchjob" in refused.json()["error"]["message"]
    job.refresh_from_db()
    assert job.state == BatchJob.State.QUEUED
    cancelled = canceller.post(url + "/cancel")
    assert cancelled.status_code == 200, cancelled.json()
    assert cancelled.json()["state"] == BatchJob.State.CANCELLED


def test_cancel_stops_a_job_and_takes_back_what_it_wrote(
    api: APIClient, demo_registry: MLRegistry, monkeypatch: pytest.MonkeyPatch, job_storage: Path
) -> None:
    from apps.endpoints.batch import jobs

    real = jobs._score

    def slow(*args: Any) -> Any:
        time.sleep(0.3)
        return real(*args)

    monkeypatch.setattr(jobs, "_score", slow)
    # Without the log: on SQLite a log_requests job holds the write lock while each piece
    # scores, and the cancel's transaction could wait out the whole job (docs/batch.md).
    body = submit(api, adult_csv(70)).json()  # 10 pieces, 3 s or more
    headers = {"X-Job-Token": body["token"]}
    time.sleep(0.8)
    cancelled = api.post(body["url"] + "/cancel", headers=headers)
    assert cancelled.status_code == 200, api.get(body["url"], headers=headers).json()
    assert cancelled.json()["state"] == "cancelled"
    tasks.drain()  # a piece under way when it was cancelled finishes, and writes nothing
    job = BatchJob.objects.get(pk=body["id"])
    assert job.state == "cancelled" and job.chunks_done < job.chunks_total
    assert MLRequest.objects.count() == 0 and not list(job_storage.rglob("*.csv"))
    again = api.post(body["url"] + "/cancel", headers=headers)
    assert again.status_code == 409


def test_with_predict_access_open_a_users_credentials_still_make_the_job_theirs(
    api: APIClient, demo_registry: MLRegistry, django_user_model: Any, settings: Any
) -> None:
    """Regression: the job routes skipped authentication while PREDICT_ACCESS=open (as
    predict does, for speed), so a logged-in user's job was filed as anonymous and the
    user could not list it."""
    from rest_framework.authtoken.models import Token

    settings.PREDICT_ACCESS = "open"
    alice = django_user_model.objects.create_user("alice")
    key = Token.objects.create(user=alice).key
    as_alice = {"Authorization": f"Token {key}"}
    data = {"file": SimpleUploadedFile("a.csv", adult_csv(5).encode(), "text/csv")}
    body = api.post(URL, data, headers=as_alice).json()
    assert "token" not in body and BatchJob.objects.get().user == alice
    assert [j["id"] for j in api.get(URL, headers=as_alice).json()["results"]] == [body["id"]]
    assert api.get(body["url"], headers=as_alice).status_code == 200
    assert api.get(body["url"]).status_code == 404  # anonymous, without a token
