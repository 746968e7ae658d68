"""A/B tests between regressors: mean absolute error with a 95 % CI per arm, Welch's t-test
on the absolute errors, the lower error wins; and the pairs no test can compare."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
import skops.io
from django.contrib.auth.models import AnonymousUser
from django.test import Client
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from apps.core.errors import InvalidInput, NotEnoughData
from apps.endpoints import policy
from apps.endpoints.catalogue.register import register_model
from apps.endpoints.experiments import ab_testing
from apps.endpoints.models import ABTest, MLAlgorithm
from apps.endpoints.serving import feedback
from apps.endpoints.serving.predict import predict
from apps.endpoints.tests.factories import operator
from apps.ml.registry import MLRegistry
from apps.ml.tests import models

pytestmark = pytest.mark.django_db


def register(model: Any, version: str, endpoint: str = "diabetes") -> MLAlgorithm:
    buffer = io.BytesIO()
    skops.io.dump(model, buffer)
    buffer.seek(0)
    return register_model(
        artifact=buffer,
        file_name="m.skops",
        endpoint_name=endpoint,
        name="regressor",
        version=version,
        status="testing",
    ).algorithm


@pytest.fixture
def arms(registry: MLRegistry) -> tuple[MLAlgorithm, MLAlgorithm]:
    """A good regressor (boosting) and a poor one (a ridge on two features)."""
    x, y = models.diabetes()
    poor = make_pipeline(StandardScaler(), Ridge()).fit(x[["age", "sex"]], y)
    good = register(models.diabetes_regressor(), "good")
    bad = register(poor, "poor")
    return good, bad


def traffic(abtest: ABTest, n: int, *, seed: int = 0) -> None:
    """``n`` requests of the diabetes data routed by the test, each with its true value as
    feedback from the client that made it."""
    x, y = models.diabetes()
    client = policy.Actor(user=AnonymousUser(), address="10.0.0.1")
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(x), size=n, replace=False).tolist():
        record = json.loads(x.iloc[[i]].to_json(orient="records"))[0]
        [served] = predict(
            endpoint_name="diabetes",
            records=[record],
            status="ab_testing",
            assignment_key=f"patient-{i}",
        )
        feedback.give(
            request_id=served["request_id"],
            value=str(y[i]),
            token=served["feedback_token"],
            actor=client,
        )


def test_the_arm_with_the_lower_error_goes_to_production(
    arms: tuple[MLAlgorithm, MLAlgorithm],
) -> None:
    poor, good = arms[1], arms[0]
    abtest = ab_testing.create(
        title="ridge vs boosting", created_by="ana", parent_mlalgorithm_1=poor,
        parent_mlalgorithm_2=good,
    )  # fmt: skip
    traffic(abtest, 300)
    stopped = ab_testing.stop(abtest_id=abtest.pk, stopped_by="ana")
    summary = stopped.summary_json
    assert summary is not None and summary["metric"] == "mae"
    mae_poor, mae_good = (arm["mae"] for arm in summary["arms"])
    assert mae_good < mae_poor
    for arm in summary["arms"]:
        low, high = arm["ci_95"]
        assert low < arm["mae"] < high and arm["value"] == arm["mae"]
    comparison = summary["comparison"]
    assert comparison["method"] == "welch_t_test"
    assert comparison["difference"] == pytest.approx(mae_good - mae_poor)
    assert comparison["improvement"] > 0 and comparison["significant"]
    assert summary["outcome"] == "arm_2_promoted"
    assert "mean absolute error" in stopped.summary and "had the lower error" in stopped.summary
    statuses = {a.pk: a.statuses.get(active=True).status for a in (poor, good)}
    assert statuses == {poor.pk: "testing", good.pk: "production"}


def test_the_errors_match_numpys_on_the_same_requests(
    arms: tuple[MLAlgorithm, MLAlgorithm],
) -> None:
    abtest = ab_testing.create(
        title="t", created_by="ana", parent_mlalgorithm_1=arms[0], parent_mlalgorithm_2=arms[1]
    )
    traffic(abtest, 80, seed=3)
    summary = ab_testing.evaluate(abtest)
    for number, arm in zip((1, 2), arms, strict=True):
        rows = abtest.requests.filter(parent_mlalgorithm=arm)
        errors = np.array([abs(float(r.feedback or "nan") - float(r.response)) for r in rows])
        numbers = summary["arms"][number - 1]
        assert numbers["with_feedback"] == len(errors)
        assert numbers["mae"] == pytest.approx(errors.mean())
    assert summary["feedback_clients"] == 1


def test_require_significance_keeps_the_incumbent_without_a_significant_gain(
    registry: MLRegistry,
) -> None:
    first = register(models.diabetes_regressor(), "1")
    second = register(models.diabetes_regressor(), "2")  # the same model: no real gain
    abtest = ab_testing.create(
        title="t", created_by="ana", parent_mlalgorithm_1=first, parent_mlalgorithm_2=second,
        require_significance=True,
    )  # fmt: skip
    traffic(abtest, 60)
    summary = ab_testing.stop(abtest_id=abtest.pk, stopped_by="ana").summary_json
    assert summary is not None and summary["outcome"] in ("arm_1_kept",)
    assert summary["comparison"]["significant"] is False


def test_an_arm_with_fewer_than_two_feedbacks_is_a_409_unless_forced(
    arms: tuple[MLAlgorithm, MLAlgorithm],
) -> None:
    abtest = ab_testing.create(
        title="t", created_by="ana", parent_mlalgorithm_1=arms[0], parent_mlalgorithm_2=arms[1]
    )
    with pytest.raises(NotEnoughData, match="fewer than two requests with feedback"):
        ab_testing.stop(abtest_id=abtest.pk, stopped_by="ana")
    forced = ab_testing.stop(abtest_id=abtest.pk, stopped_by="ana", force=True)
    assert forced.state == "aborted"


def test_a_classifier_and_a_regressor_or_other_classes_cannot_be_compared(
    arms: tuple[MLAlgorithm, MLAlgorithm], registry: MLRegistry
) -> None:
    classifier = register(models.wine_classifier(), "wine", endpoint="diabetes")
    with pytest.raises(InvalidInput, match="their task differ"):
        ab_testing.create(
            title="t", created_by="ana", parent_mlalgorithm_1=arms[0],
            parent_mlalgorithm_2=classifier,
        )  # fmt: skip
    binary = register(models.cancer_classifier(), "cancer", endpoint="diabetes")
    with pytest.raises(InvalidInput, match="their classes differ"):
        ab_testing.create(
            title="t", created_by="ana", parent_mlalgorithm_1=classifier,
            parent_mlalgorithm_2=binary,
        )  # fmt: skip
    other_endpoint = register(models.diabetes_regressor(), "x", endpoint="elsewhere")
    with pytest.raises(InvalidInput, match="same endpoint"):
        ab_testing.create(
            title="t", created_by="ana", parent_mlalgorithm_1=arms[0],
            parent_mlalgorithm_2=other_endpoint,
        )  # fmt: skip
    assert ABTest.objects.count() == 0


def test_the_report_and_the_admin_show_a_regressor_tests_errors(
    arms: tuple[MLAlgorithm, MLAlgorithm], client: Client
) -> None:
    abtest = ab_testing.create(
        title="t", created_by="ana", parent_mlalgorithm_1=arms[0], parent_mlalgorithm_2=arms[1]
    )
    traffic(abtest, 40)
    client.force_login(operator())
    running = client.get("/admin/endpoints/abtest/").content.decode()
    assert running.count("MAE ") == 2
    for arm in ab_testing.evaluate(abtest)["arms"]:  # the list's sums give the same MAE
        assert f"MAE {arm['mae']:.4g} ({arm['with_feedback']})" in running
    page = client.get(f"/abtests/{abtest.pk}/report").content.decode()
    assert "mean absolute error on requests with feedback" in page
    assert page.count('class="arm"') == 2
    ab_testing.stop(abtest_id=abtest.pk, stopped_by="ana")
    page = client.get(f"/abtests/{abtest.pk}/report").content.decode()
    assert "welch_t_test" in page and "numbers so far" not in page


def test_arms_taking_different_features_each_get_theirs_and_nothing_else_passes(
    arms: tuple[MLAlgorithm, MLAlgorithm],
) -> None:
    good, poor = arms  # poor takes age and sex only; good takes all ten
    ab_testing.create(
        title="t", created_by="ana", parent_mlalgorithm_1=poor, parent_mlalgorithm_2=good
    )
    x, _ = models.diabetes()
    record = json.loads(x.iloc[[0]].to_json(orient="records"))[0]
    served = {
        predict(endpoint_name="diabetes", records=[record], status="ab_testing", assignment_key=k)[
            0
        ]["algorithm"]["id"]
        for k in "abcdefghij"
    }
    assert served == {good.pk, poor.pk}  # both arms answered the same ten-feature record
    with pytest.raises(InvalidInput, match="see details") as refused:
        predict(endpoint_name="diabetes", records=[{**record, "weight": 80}], status="ab_testing")
    assert "weight" in refused.value.details
