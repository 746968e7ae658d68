"""Sequential A/B tests in the service: every path that writes feedback keeps the test's
per-arm sums (``ABTestTally``) equal to a scan of its log; each write is a look (the
p-value's running minimum, the first look that decides); ``auto_stop`` ends a test once,
when the sequence decides or undecided at ``planned_feedback``; a stop by hand follows
the sequence, and says plainly when it had not decided; the API, the report and /metrics
read the sequence. The statistics themselves: tests/services/test_sequential.py."""

from __future__ import annotations

import io
import itertools
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from apps.endpoints import policy
from apps.endpoints.batch import tasks
from apps.endpoints.experiments import ab_testing, evaluation, sequential
from apps.endpoints.models import ABTest, ABTestTally, MLAlgorithm, MLAlgorithmStatus, MLRequest
from apps.endpoints.serving import feedback
from apps.endpoints.tests.apis.test_abtests import PREDICT, arms, create, current, stop
from apps.endpoints.tests.apis.test_batch_predict import adult_csv, stream_json, upload
from apps.endpoints.tests.factories import operator
from apps.endpoints.tests.job_factories import use_job_storage
from apps.ml.tests.factories import SAMPLE_RECORD

__all__ = ["arms"]  # a fixture, imported to be used here
pytestmark = pytest.mark.django_db(transaction=True)  # looks run when feedback commits
Arms = tuple[MLAlgorithm, MLAlgorithm]


def other(label: str) -> str:
    return "<=50K" if label == ">50K" else ">50K"


def scanned(abtest: ABTest) -> dict[int, tuple[int, float, float]]:
    """Per algorithm, the count, sum and sum of squares of the test's observations, from a
    scan of its log: what the tally must hold."""
    sums: dict[int, list[float]] = {}
    rows = MLRequest.objects.filter(ab_test=abtest, feedback__isnull=False)
    for algorithm_id, response, value in rows.values_list(
        "parent_mlalgorithm_id", "response", "feedback"
    ):
        assert value is not None
        x = evaluation.observation(response, value, regression=False)
        total = sums.setdefault(algorithm_id, [0, 0.0, 0.0])
        total[0] += 1
        total[1] += x
        total[2] += x * x
    return {k: (int(v[0]), v[1], v[2]) for k, v in sums.items()}


def tallied(abtest: ABTest) -> dict[int, tuple[int, float, float]]:
    return {
        algorithm_id: (count, total, total_sq)
        for algorithm_id, count, total, total_sq in ABTestTally.objects.filter(
            ab_test=abtest
        ).values_list("algorithm_id", "count", "total", "total_sq")
        if count
    }


class Traffic:
    """Predictions through the test over HTTP, each answered with feedback: the k-th
    feedback of an arm is correct when ``correct(arm, k)`` says so (deterministic, so that
    whichever split the hash of the test's id draws, each arm's accuracy is what it is)."""

    def __init__(self, api: APIClient, arms: Arms, correct: Any) -> None:
        self.api, self.correct = api, correct
        self.number = {arms[0].pk: 1, arms[1].pk: 2}
        self.given: Counter[int] = Counter()
        self.keys = itertools.count()

    def one(self) -> int:
        """One prediction and its feedback; the HTTP status of the prediction."""
        answer = self.api.post(
            PREDICT,
            data=json.dumps(SAMPLE_RECORD),
            content_type="application/json",
            HTTP_X_ASSIGNMENT_KEY=f"client-{next(self.keys)}",
        )
        if answer.status_code != 200:
            return int(answer.status_code)
        served = answer.json()
        arm = self.number[served["algorithm"]["id"]]
        right = self.correct(arm, self.given[arm])
        self.given[arm] += 1
        given = self.api.put(
            f"/api/v1/mlrequests/{served['request_id']}",
            {
                "feedback": served["label"] if right else other(served["label"]),
                "feedback_token": served["feedback_token"],
            },
            format="json",
        )
        assert given.status_code == 200, given.content
        return 200


# -- creating --------------------------------------------------------------------------------


def test_a_new_test_is_sequential_and_its_options_are_checked(
    staff_api: APIClient, arms: Arms
) -> None:
    body = create(staff_api, arms).json()
    assert (body["mode"], body["planned_feedback"], body["auto_stop"]) == (
        "sequential",
        None,
        False,
    )
    assert body["sequence"]["n"] == 0 and body["sequence"]["decided"] is False
    assert body["sequence"]["planned"] == sequential.DEFAULT_PLANNED
    stop(staff_api, body["id"], force=True)
    for extra, field in (
        ({"auto_stop": True}, "planned_feedback"),  # when to give up
        ({"auto_stop": True, "planned_feedback": 400, "mode": "fixed"}, "auto_stop"),
        ({"planned_feedback": 59}, "planned_feedback"),  # both arms need MIN_COUNT
        ({"mode": "bayesian"}, "mode"),
    ):
        refused = create(staff_api, arms, **extra)
        assert refused.status_code == 400, (extra, refused.content)
        assert field in refused.json()["error"]["details"], extra
    fixed = create(staff_api, arms, mode="fixed").json()
    assert fixed["mode"] == "fixed" and fixed["sequence"] is None


# -- the tally: every path that writes feedback ------------------------------------------------


def test_every_feedback_path_keeps_the_tests_sums_equal_to_its_log(
    api: APIClient, staff_api: APIClient, arms: Arms, settings: Any, tmp_path: Path
) -> None:
    abtest = ABTest.objects.get(pk=create(staff_api, arms).json()["id"])
    # Single feedback, with tokens.
    traffic = Traffic(api, arms, lambda arm, k: k % 3 != 0)
    for _ in range(10):
        traffic.one()
    assert (
        tallied(abtest) == scanned(abtest) and sum(c for c, _, _ in tallied(abtest).values()) == 10
    )
    # A revision moves its one observation.
    row = MLRequest.objects.filter(ab_test=abtest).first()
    assert row is not None and row.feedback is not None
    staff = policy.Actor(user=operator("reviser"), address="127.0.0.1")
    feedback.give(request_id=row.pk, value=other(row.feedback), token=None, actor=staff)
    assert tallied(abtest) == scanned(abtest)
    # A file of feedback (bulk).
    unanswered = [predict_row(api) for _ in range(6)]  # answered by a CSV file
    lines = "".join(f"{pk},{token},>50K\n" for pk, token in unanswered)
    sent = api.post(
        "/api/v1/feedback",
        {
            "file": SimpleUploadedFile(
                "f.csv", f"request_id,feedback_token,feedback\n{lines}".encode()
            )
        },
    )
    assert sent.status_code == 200 and sent.json()["applied"] == 6, sent.content
    assert tallied(abtest) == scanned(abtest)
    # A batch file's label column.
    body = stream_json(upload(api, adult_csv(25), "/api/v1/batch-predict?status=ab_testing"))
    assert body["labels_recorded"] is True
    assert tallied(abtest) == scanned(abtest)
    # A batch job's label column.
    use_job_storage(settings, tmp_path / "jobs")
    job = api.post(
        "/api/v1/batch-jobs?status=ab_testing",
        {
            "file": SimpleUploadedFile("f.csv", adult_csv(14).encode()),
            "log_requests": "true",
            "target_column": "income",
        },
    )
    assert job.status_code == 202, job.content
    tasks.drain()
    assert tallied(abtest) == scanned(abtest)
    assert sum(c for c, _, _ in tallied(abtest).values()) == 10 + 6 + 25 + 14
    # Rows deleted (the admin's delete): their observations leave the running test.
    some = list(MLRequest.objects.filter(ab_test=abtest).values_list("pk", flat=True)[:5])
    feedback.delete_requests(MLRequest.objects.filter(pk__in=some))
    assert tallied(abtest) == scanned(abtest)


def predict_row(api: APIClient) -> tuple[int, str]:
    answer = api.post(PREDICT, data=json.dumps(SAMPLE_RECORD), content_type="application/json")
    assert answer.status_code == 200, answer.content
    return answer.json()["request_id"], answer.json()["feedback_token"]


def test_a_stopped_tests_sums_and_decision_stay_as_they_were(
    api: APIClient, staff_api: APIClient, arms: Arms
) -> None:
    test_id = create(staff_api, arms).json()["id"]
    traffic = Traffic(api, arms, lambda arm, k: True)
    rows = [predict_row(api) for _ in range(4)]
    # Feedback on both arms, so that the stop decides: which arm a key gets depends on the
    # test's id (its hash), and six keys all fell on one arm now and then (CI, 2026-12-07:
    # 409 not_enough_data, the test not stopped).
    while min(traffic.given[1], traffic.given[2]) < 3:
        traffic.one()
    decided = stop(staff_api, test_id).json()
    before = tallied(ABTest.objects.get(pk=test_id))
    for pk, token in rows:  # feedback to the stopped test's requests, then their deletion
        assert (
            api.put(
                f"/api/v1/mlrequests/{pk}",
                {"feedback": ">50K", "feedback_token": token},
                format="json",
            ).status_code
            == 200
        )
    feedback.delete_requests(MLRequest.objects.filter(ab_test_id=test_id))
    after = ABTest.objects.get(pk=test_id)
    assert tallied(after) == before
    assert after.summary_json == decided["summary_json"]


# -- looks and auto_stop, end to end over HTTP ---------------------------------------------------


def test_auto_stop_promotes_a_much_better_arm_2_once_before_planned_feedback(
    api: APIClient, staff_api: APIClient, arms: Arms
) -> None:
    created = create(staff_api, arms, auto_stop=True, planned_feedback=600)
    test_id = created.json()["id"]
    # Arm 2 always right, arm 1 right every other time.
    traffic = Traffic(api, arms, lambda arm, k: arm == 2 or k % 2 == 0)
    sent = 0
    while traffic.one() == 200:
        sent += 1
        assert sent < 600, "the test did not stop itself"
    abtest = ABTest.objects.get(pk=test_id)
    summary = abtest.summary_json
    assert summary is not None and abtest.state == "stopped"
    assert abtest.stopped_by == ab_testing.AUTO_STOP
    assert summary["outcome"] == "arm_2_promoted" and summary["decided_by"] == "sequence"
    itself = summary["stopped_itself"]
    assert itself["reason"] == "decided" and itself["at_feedback"] < 600
    assert abtest.first_exclusion is not None
    assert itself["at_feedback"] == summary["sequence"]["n"] == abtest.first_exclusion["n"]
    lower, upper = summary["sequence"]["lower"], summary["sequence"]["upper"]
    assert 0 < lower < upper  # arm 2 - arm 1 in accuracy, excluding 0
    assert abtest.min_p_value <= abtest.alpha
    assert [current(a) for a in arms] == ["testing", "production"]
    promoted = MLAlgorithmStatus.objects.filter(
        parent_mlalgorithm=arms[1], status="production", created_by=ab_testing.AUTO_STOP
    )
    assert promoted.count() == 1
    assert "arm 2 is more accurate by" in abtest.summary and "every look" in abtest.summary
    assert "stopped itself at" in abtest.summary


def test_auto_stop_with_equal_arms_runs_to_planned_feedback_and_restores_the_statuses(
    api: APIClient, staff_api: APIClient, arms: Arms
) -> None:
    test_id = create(staff_api, arms, auto_stop=True, planned_feedback=160).json()["id"]
    traffic = Traffic(api, arms, lambda arm, k: k % 5 != 0)  # both arms 80 % right
    sent = 0
    while traffic.one() == 200:
        sent += 1
        assert sent <= 160
    abtest = ABTest.objects.get(pk=test_id)
    assert sent == 160 and abtest.state == "aborted"
    assert abtest.summary_json is not None
    assert abtest.summary_json["outcome"] == "no_difference"
    assert abtest.summary_json["stopped_itself"] == {
        "reason": "planned_feedback_reached",
        "at_feedback": 160,
    }
    assert abtest.first_exclusion is None and abtest.looks == 160
    assert [current(a) for a in arms] == ["production", "testing"]  # as before the test
    assert "No difference was established" in abtest.summary


def test_looks_from_many_threads_stop_a_decided_test_once(staff_api: APIClient, arms: Arms) -> None:
    abtest = ABTest.objects.get(
        pk=create(staff_api, arms, auto_stop=True, planned_feedback=400).json()["id"]
    )
    seeded(abtest, arms, (30, 80))  # arm 2 much better: decided
    start = threading.Barrier(4)

    def look() -> None:
        try:
            start.wait(10)
            ab_testing.look([abtest.pk])
        finally:
            connection.close()

    threads = [threading.Thread(target=look) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    abtest.refresh_from_db()
    assert abtest.state == "stopped" and abtest.stopped_by == ab_testing.AUTO_STOP
    assert MLAlgorithmStatus.objects.filter(created_by=ab_testing.AUTO_STOP).count() == 2
    assert abtest.looks >= 1 and abtest.first_exclusion is not None


# -- stopping by hand -----------------------------------------------------------------------------


def seeded(abtest: ABTest, arms: Arms, correct: tuple[int, int], n: int = 100) -> None:
    for algorithm, right in zip(arms, correct, strict=True):
        ABTestTally.objects.create(
            ab_test=abtest, algorithm=algorithm, count=n, total=right, total_sq=right
        )
        MLRequest.objects.bulk_create(
            MLRequest(
                input_data={},
                full_response={},
                response=">50K",
                feedback=">50K" if i < right else "<=50K",
                parent_mlalgorithm=algorithm,
                ab_test=abtest,
            )
            for i in range(n)
        )


@pytest.mark.parametrize(("require", "outcome"), [(False, "arm_2_promoted"), (True, "arm_1_kept")])
def test_a_stop_by_hand_before_the_sequence_decided_says_so(
    staff_api: APIClient, arms: Arms, require: bool, outcome: str
) -> None:
    test_id = create(staff_api, arms, require_significance=require).json()["id"]
    seeded(ABTest.objects.get(pk=test_id), arms, (80, 86))  # better, not established
    stopped = stop(staff_api, test_id).json()
    summary = stopped["summary_json"]
    assert summary["sequence"]["decided"] is False and summary["decided_by"] == "undecided"
    assert summary["outcome"] == outcome
    assert "not decided" in stopped["summary"]
    assert ("not because the difference is established" in stopped["summary"]) is (not require)


def test_a_stop_by_hand_after_the_sequence_decided_follows_it(
    staff_api: APIClient, arms: Arms
) -> None:
    test_id = create(staff_api, arms, require_significance=True).json()["id"]
    seeded(ABTest.objects.get(pk=test_id), arms, (90, 60))  # arm 1 much better
    stopped = stop(staff_api, test_id).json()
    summary = stopped["summary_json"]
    assert summary["outcome"] == "arm_1_promoted" and summary["decided_by"] == "sequence"
    assert "arm 1 is more accurate by" in stopped["summary"]
    assert [current(a) for a in arms] == ["production", "testing"]


# -- reading it: the API, the report, /metrics ----------------------------------------------------


def test_the_api_the_report_and_metrics_read_the_live_sequence(
    api: APIClient, staff_api: APIClient, client: Client, arms: Arms
) -> None:
    test_id = create(staff_api, arms, planned_feedback=400).json()["id"]
    traffic = Traffic(api, arms, lambda arm, k: k % 4 != 0)
    for _ in range(90):
        traffic.one()
    read = staff_api.get(f"/api/v1/abtests/{test_id}").json()["sequence"]
    abtest = ABTest.objects.get(pk=test_id)
    assert read["n"] == 90 and read["looks"] == abtest.looks == 90
    assert read["p_value"] == pytest.approx(min(abtest.min_p_value, read["p_value_now"]))
    m1, m2 = ab_testing.arm_moments(abtest)
    expected = sequential.compare(m1, m2, metric="accuracy", planned=400)
    assert (read["lower"], read["upper"]) == pytest.approx((expected.lower, expected.upper))
    page = client.get(f"/abtests/{test_id}/report").content.decode()
    assert 'class="over-time"' in page and 'class="sequence"' in page and 'class="zero"' in page
    assert "valid at every look" in page
    metrics = client.get("/metrics").content.decode()
    labels = 'endpoint="income_classifier",metric="accuracy"'  # in the order Prometheus sorts
    assert f'ml_ab_test_feedback{{ab_test="{test_id}",{labels}}} 90.0' in metrics
    lower = f'ml_ab_test_difference{{ab_test="{test_id}",bound="lower",{labels}}}'
    assert f"{lower} {read['lower']!r}" in metrics
    stopped = stop(staff_api, test_id).json()
    page = client.get(f"/abtests/{test_id}/report").content.decode()
    assert 'class="stopped"' in page
    assert stopped["sequence"] == stopped["summary_json"]["sequence"]


def test_recount_feedback_rebuilds_a_running_tests_arms_from_its_log(
    api: APIClient, staff_api: APIClient, arms: Arms
) -> None:
    from django.core.management import call_command

    test_id = create(staff_api, arms).json()["id"]
    traffic = Traffic(api, arms, lambda arm, k: k % 3 != 0)
    for _ in range(12):
        traffic.one()
    abtest = ABTest.objects.get(pk=test_id)
    right = tallied(abtest)
    ABTestTally.objects.filter(ab_test=abtest).update(count=999, total=1.0)  # drifted
    out = io.StringIO()
    call_command("recount_feedback", stdout=out)
    assert tallied(abtest) == right == scanned(abtest)
    assert "corrected the counts of 2 algorithms or running A/B test arms" in out.getvalue()
