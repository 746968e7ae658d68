"""The A/B test lifecycle without HTTP: create, route, stop, decide."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import pytest
from django.db import connection

from apps.core.errors import ABTestStopped, InvalidInput, NotEnoughData, NotFound
from apps.endpoints.catalogue import statuses
from apps.endpoints.catalogue.statuses import set_algorithm_status
from apps.endpoints.experiments import ab_testing
from apps.endpoints.models import ABTest, MLAlgorithm, MLRequest
from apps.endpoints.serving.predict import predict
from apps.endpoints.tests.factories import algorithm
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def rf(registry: MLRegistry) -> MLAlgorithm:
    return algorithm(registry, name="random forest", status="production")


@pytest.fixture
def et(registry: MLRegistry) -> MLAlgorithm:
    return algorithm(registry, name="extra trees", status="testing", artifact="extra_trees.joblib")


def start(arm_1: MLAlgorithm, arm_2: MLAlgorithm, **options: object) -> ABTest:
    """A test of the fixed-horizon rule unless ``mode`` says otherwise: the rows these
    tests log skip the feedback paths that keep a sequential test's tally
    (test_sequential_ab.py tests those)."""
    options.setdefault("mode", "fixed")
    return ab_testing.create(
        title="rf vs et",
        created_by="ana",
        parent_mlalgorithm_1=arm_1,
        parent_mlalgorithm_2=arm_2,
        **options,  # type: ignore[arg-type]
    )


def saved_summary(abtest: ABTest) -> dict[str, Any]:
    """The summary a stopped test saved (every stop saves one; null while it runs)."""
    summary: dict[str, Any] | None = abtest.summary_json
    assert summary is not None
    return summary


def log(
    abtest: ABTest | None, arm: MLAlgorithm, *, correct: int, wrong: int = 0, no_feedback: int = 0
) -> None:
    """Requests served by ``arm`` (routed by ``abtest``): ``correct`` with the predicted
    label as feedback, ``wrong`` with the other label, ``no_feedback`` without any."""
    rows: list[tuple[str, str | None]] = []
    rows += [(">50K", ">50K")] * correct + [(">50K", "<=50K")] * wrong
    rows += [(">50K", None)] * no_feedback
    MLRequest.objects.bulk_create(
        MLRequest(
            input_data={},
            full_response={},
            response=response,
            feedback=feedback,
            parent_mlalgorithm=arm,
            ab_test=abtest,
        )
        for response, feedback in rows
    )


def status(alg: MLAlgorithm) -> str | None:
    active = alg.statuses.filter(active=True).first()
    return active.status if active else None


# -- create ------------------------------------------------------------------------------


def test_creating_a_test_puts_both_arms_in_ab_testing_and_remembers_their_statuses(
    rf: MLAlgorithm, et: MLAlgorithm
) -> None:
    abtest = start(rf, et, arm_2_share=0.2, alpha=0.01, require_significance=True)
    assert (status(rf), status(et)) == ("ab_testing", "ab_testing")
    assert (abtest.previous_status_1, abtest.previous_status_2) == ("production", "testing")
    assert abtest.state == "running" and abtest.ended_at is None
    assert (abtest.arm_2_share, abtest.alpha, abtest.require_significance) == (0.2, 0.01, True)
    assert rf.statuses.filter(active=True).get().created_by == "ana"


def test_create_is_one_transaction_so_a_failure_leaves_both_statuses_alone(
    rf: MLAlgorithm, et: MLAlgorithm, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = set_algorithm_status
    calls: list[int] = []

    def fail_on_second_arm(**kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return original(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(statuses, "set_algorithm_status", fail_on_second_arm)
    with pytest.raises(RuntimeError):
        start(rf, et)
    assert len(calls) == 2
    assert (status(rf), status(et)) == ("production", "testing")
    assert ABTest.objects.count() == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"arm_2_share": 0.0}, "arm_2_share"),
        ({"arm_2_share": 1.0}, "arm_2_share"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
    ],
)
def test_a_split_or_alpha_outside_zero_and_one_is_refused(
    rf: MLAlgorithm, et: MLAlgorithm, options: dict[str, float], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        start(rf, et, **options)
    assert field in caught.value.details
    assert ABTest.objects.count() == 0 and status(rf) == "production"


def test_an_arm_of_a_running_test_cannot_join_another(
    registry: MLRegistry, rf: MLAlgorithm, et: MLAlgorithm
) -> None:
    first = start(rf, et)
    third = algorithm(registry, name="third", status="staging")
    with pytest.raises(InvalidInput, match="already has a running A/B test") as caught:
        start(third, et)
    assert list(caught.value.details) == ["parent_mlalgorithm_2"]
    assert status(third) == "staging" and ABTest.objects.get() == first


def test_an_endpoint_runs_one_test_at_a_time_but_others_are_independent(
    registry: MLRegistry, rf: MLAlgorithm, et: MLAlgorithm
) -> None:
    start(rf, et)
    c, d = (algorithm(registry, name=n, status="staging") for n in ("c", "d"))
    with pytest.raises(InvalidInput) as caught:
        start(c, d)
    assert "parent_endpoint" in caught.value.details
    e, f = (algorithm(registry, name=n, endpoint="other_endpoint") for n in ("e", "f"))
    assert start(e, f).state == "running"


def test_a_stopped_test_frees_its_arms_for_a_new_one(rf: MLAlgorithm, et: MLAlgorithm) -> None:
    ab_testing.stop(abtest_id=start(rf, et).pk, stopped_by="ana", force=True)
    assert start(et, rf).state == "running"


# -- route -------------------------------------------------------------------------------


def test_predict_with_ab_testing_is_routed_by_the_running_test_and_records_it(
    rf: MLAlgorithm, et: MLAlgorithm
) -> None:
    abtest = start(rf, et)
    served = {
        predict(
            endpoint_name="income_classifier",
            records=[SAMPLE_RECORD] * 2,
            status="ab_testing",
            rng=random.Random(seed),
        )[0]["algorithm"]["id"]
        for seed in range(12)
    }
    assert served == {rf.pk, et.pk}
    assert MLRequest.objects.count() == 24
    assert set(MLRequest.objects.values_list("ab_test", flat=True)) == {abtest.pk}


def test_requests_outside_the_test_do_not_record_it(rf: MLAlgorithm, et: MLAlgorithm) -> None:
    start(rf, et)
    predict(
        endpoint_name="income_classifier",
        records=[SAMPLE_RECORD],
        status="ab_testing",
        version="0.0.1",
        rng=random.Random(0),
    )
    assert MLRequest.objects.get().ab_test is None  # the client chose the version itself


def test_the_traffic_split_is_applied(rf: MLAlgorithm, et: MLAlgorithm) -> None:
    start(rf, et, arm_2_share=0.2)
    _, abtest = ab_testing.route(endpoint_name="income_classifier")
    assert abtest is not None
    rng = random.Random(42)
    arms = Counter(
        ab_testing.pick_arm(abtest, assignment_key=None, rng=rng).pk for _ in range(4000)
    )
    assert 0.18 < arms[et.pk] / 4000 < 0.22  # seeded: deterministic; 0.5 would fail
    keyed = Counter(
        ab_testing.pick_arm(abtest, assignment_key=f"user-{i}", rng=rng).pk for i in range(4000)
    )
    assert 0.18 < keyed[et.pk] / 4000 < 0.22  # keys follow the split too


def test_the_same_assignment_key_always_gets_the_same_arm(rf: MLAlgorithm, et: MLAlgorithm) -> None:
    start(rf, et)
    for key in ("user-1", "user-2", "user-3"):
        arms = {
            ab_testing.route(
                endpoint_name="income_classifier", assignment_key=key, rng=random.Random(seed)
            )[0].pk
            for seed in range(6)
        }
        assert len(arms) == 1, key
    _, abtest = ab_testing.route(endpoint_name="income_classifier")
    assert abtest is not None
    by_key = {
        ab_testing.pick_arm(abtest, assignment_key=f"k{i}", rng=random.Random(0)).pk
        for i in range(40)
    }
    assert by_key == {rf.pk, et.pk}


def test_the_assignment_is_a_sha256_of_test_and_key_so_every_process_agrees() -> None:
    # Pinned: the first 8 bytes of sha256(b"7:user-42") are 634cc3ee103c0c73. Python's
    # salted hash() would give another number in every process.
    point = ab_testing.assignment_point(abtest_id=7, assignment_key="user-42")
    assert point == 0x634CC3EE103C0C73 / 2**64 == pytest.approx(0.38789009630293964)
    assert ab_testing.assignment_point(abtest_id=8, assignment_key="user-42") != (
        ab_testing.assignment_point(abtest_id=7, assignment_key="user-42")
    )


# -- stop --------------------------------------------------------------------------------


def test_only_this_tests_requests_with_feedback_count(
    registry: MLRegistry, rf: MLAlgorithm, et: MLAlgorithm
) -> None:
    abtest = start(rf, et)
    log(abtest, rf, correct=30, wrong=10, no_feedback=50)  # no feedback: neither right nor wrong
    log(abtest, et, correct=20, wrong=20, no_feedback=5)
    log(None, et, correct=500)  # served outside the test
    stopped = ab_testing.stop(abtest_id=abtest.pk, stopped_by="bo")
    arm_1, arm_2 = saved_summary(stopped)["arms"]
    assert (arm_1["requests"], arm_1["with_feedback"], arm_1["correct"]) == (90, 40, 30)
    assert (arm_2["requests"], arm_2["with_feedback"], arm_2["correct"]) == (45, 40, 20)
    assert arm_1["accuracy"] == 0.75 and arm_2["accuracy"] == 0.5
    assert arm_1["ci_95"][0] < 0.75 < arm_1["ci_95"][1]


def test_the_more_accurate_arm_goes_to_production_and_the_other_to_testing(
    rf: MLAlgorithm, et: MLAlgorithm
) -> None:
    abtest = start(rf, et)
    log(abtest, rf, correct=70, wrong=30)
    log(abtest, et, correct=85, wrong=15)
    stopped = ab_testing.stop(abtest_id=abtest.pk, stopped_by="bo")
    assert (status(rf), status(et)) == ("testing", "production")
    assert stopped.state == "stopped" and stopped.stopped_by == "bo"
    assert saved_summary(stopped)["outcome"] == "arm_2_promoted"
    assert saved_summary(stopped)["statuses"] == {str(rf.pk): "testing", str(et.pk): "production"}
    comparison = saved_summary(stopped)["comparison"]
    assert comparison["method"] == "two_proportion_z_test"
    assert comparison["difference"] == pytest.approx(0.15) and comparison["significant"]
    assert "significant at alpha 0.05" in stopped.summary and "+15.0 points" in stopped.summary


def test_arm_1_wins_when_it_is_more_accurate(rf: MLAlgorithm, et: MLAlgorithm) -> None:
    abtest = start(rf, et)
    log(abtest, rf, correct=9, wrong=1)
    log(abtest, et, correct=8, wrong=2)
    stopped = ab_testing.stop(abtest_id=abtest.pk, stopped_by="bo")
    assert (status(rf), status(et)) == ("production", "testing")
    assert saved_summary(stopped)["comparison"]["method"] == "fisher_exact_test"
    assert not saved_summary(stopped)["comparison"]["significant"]
    assert "not significant" in stopped.summary


def test_a_tie_promotes_nobody_and_restores_both_statuses(rf: MLAlgorithm, et: MLAlgorithm) -> None:
    abtest = start(et, rf)  # arm 1 is the testing one: a tie must not favour arm 1
    log(abtest, et, correct=40, wrong=10)
    log(abtest, rf, correct=80, wrong=20)
    stopped = ab_testing.stop(abtest_id=abtest.pk, stopped_by="bo")
    assert (status(rf), status(et)) == ("production", "testing")
    assert saved_summary(stopped)["outcome"] == "tie" and stopped.state == "aborted"


def test_require_significance_keeps_arm_1_unless_arm_2_is_significantly_better(
    registry: MLRegistry, rf: MLAlgorithm, et: MLAlgorithm
) -> None:
    abtest = start(rf, et, require_significance=True)
    log(abtest, rf, correct=80, wrong=20)
    log(abtest, et, correct=85, wrong=15)  # better, but p is about 0.35
    stopped = ab_testing.stop(abtest_id=abtest.pk, stopped_by="bo")
    assert saved_summary(stopped)["outcome"] == "arm_1_kept"
    assert (status(rf), status(et)) == ("production", "testing")

    again = start(rf, et, require_significance=True)
    log(again, rf, correct=150, wrong=100)
    log(again, et, correct=200, wrong=50)
    assert saved_summary(ab_testing.stop(abtest_id=again.pk, stopped_by="bo"))["outcome"] == (
        "arm_2_promoted"
    )
    assert (status(rf), status(et)) == ("testing", "production")


def test_an_arm_without_feedback_is_a_409_and_changes_nothing(
    rf: MLAlgorithm, et: MLAlgorithm
) -> None:
    abtest = start(rf, et)
    log(abtest, rf, correct=5)
    log(abtest, et, correct=0, no_feedback=7)
    with pytest.raises(
        NotEnoughData, match=r"arm 2 \(extra trees 0.0.1\) has no request"
    ) as caught:
        ab_testing.stop(abtest_id=abtest.pk, stopped_by="bo")
    assert caught.value.status_code == 409
    assert caught.value.details["arms"][1] == {"arm": 2, "requests": 7, "with_feedback": 0}
    abtest.refresh_from_db()
    assert abtest.state == "running" and abtest.ended_at is None and abtest.summary == ""
    assert (status(rf), status(et)) == ("ab_testing", "ab_testing")


def test_force_ends_a_test_without_feedback_and_restores_the_previous_statuses(
    registry: MLRegistry, rf: MLAlgorithm, et: MLAlgorithm
) -> None:
    bare = algorithm(registry, name="bare", status="staging")
    bare.statuses.update(active=False)  # an algorithm with no active status at all
    abtest = start(rf, bare)
    stopped = ab_testing.stop(abtest_id=abtest.pk, stopped_by="bo", force=True)
    assert stopped.state == "aborted" and saved_summary(stopped)["outcome"] == "aborted"
    assert saved_summary(stopped)["comparison"] is None
    assert (status(rf), status(bare)) == ("production", None)
    assert "no feedback" not in stopped.summary and "0 with feedback" in stopped.summary


def test_a_test_stops_once_and_its_timestamps_are_aware(rf: MLAlgorithm, et: MLAlgorithm) -> None:
    abtest = start(rf, et)
    log(abtest, rf, correct=1)
    log(abtest, et, correct=1)
    stopped = ab_testing.stop(abtest_id=abtest.pk, stopped_by="bo")
    assert stopped.ended_at is not None and stopped.ended_at.utcoffset() is not None
    assert stopped.created_at.utcoffset() is not None and stopped.created_at <= stopped.ended_at
    with pytest.raises(ABTestStopped, match="already ended") as caught:
        ab_testing.stop(abtest_id=abtest.pk, stopped_by="cy", force=True)
    assert caught.value.status_code == 409
    assert ABTest.objects.get().stopped_by == "bo"
    with pytest.raises(NotFound):
        ab_testing.stop(abtest_id=abtest.pk + 1000, stopped_by="bo")


@pytest.mark.django_db(transaction=True)
def test_concurrent_stops_of_one_test_have_exactly_one_winner(
    rf: MLAlgorithm, et: MLAlgorithm
) -> None:
    abtest = start(rf, et)
    log(abtest, rf, correct=60, wrong=40)
    log(abtest, et, correct=70, wrong=30)
    barrier = threading.Barrier(4)
    won: list[str] = []
    refused: list[BaseException] = []
    errors: list[BaseException] = []

    def stop(name: str) -> None:
        try:
            barrier.wait()
            ab_testing.stop(abtest_id=abtest.pk, stopped_by=name)
            won.append(name)
        except ABTestStopped as exc:
            refused.append(exc)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=stop, args=(f"op{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(won) == 1 and len(refused) == 3
    assert ABTest.objects.get().stopped_by == won[0]
    # One decision: each arm got exactly one new status after ab_testing.
    assert rf.statuses.count() == 3 and et.statuses.count() == 3
    assert (status(rf), status(et)) == ("testing", "production")
