"""The Django admin, as an operator uses it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.endpoints.models import ABTest, MLAlgorithm, MLRequest
from apps.endpoints.tests.factories import operator
from apps.ml.registry import MLRegistry

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client: Client, django_user_model: type[User]) -> Client:
    user = django_user_model.objects.create_superuser("admin", "a@example.com", "pw")
    client.force_login(user)
    return client


def test_every_admin_page_renders_for_staff(
    admin_client_: Client, demo_registry: MLRegistry
) -> None:
    rf, et = MLAlgorithm.objects.order_by("id")
    MLRequest.objects.create(
        input_data={"age": 1},
        full_response={"label": "<=50K"},
        response="<=50K",
        parent_mlalgorithm=rf,
    )
    ABTest.objects.create(
        title="t", created_by="x", parent_mlalgorithm_1=rf, parent_mlalgorithm_2=et
    )
    for model in ("endpoint", "mlalgorithm", "mlalgorithmstatus", "mlrequest", "abtest"):
        page = admin_client_.get(f"/admin/endpoints/{model}/")
        assert page.status_code == 200, model
        obj = page.context["cl"].result_list[0]
        assert admin_client_.get(f"/admin/endpoints/{model}/{obj.pk}/change/").status_code == 200
    listing = admin_client_.get("/admin/endpoints/mlalgorithm/").content.decode()
    assert "production" in listing and "testing" in listing
    change = admin_client_.get(f"/admin/endpoints/mlalgorithm/{rf.pk}/change/").content.decode()
    assert "Status history" in change


def test_the_filters_work(admin_client_: Client, demo_registry: MLRegistry) -> None:
    page = admin_client_.get("/admin/endpoints/mlalgorithm/?statuses__status=testing")
    assert [a.name for a in page.context["cl"].result_list] == ["extra trees"]


def test_the_promote_action_uses_the_status_service(
    admin_client_: Client, demo_registry: MLRegistry
) -> None:
    et = MLAlgorithm.objects.get(name="extra trees")
    response = admin_client_.post(
        "/admin/endpoints/mlalgorithm/",
        {"action": "promote_to_production", "_selected_action": [et.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert list(et.statuses.order_by("id").values_list("status", "active", "created_by")) == [
        ("testing", False, "ML_PipeLine"),
        ("production", True, "admin"),
    ]


def test_the_promote_action_asks_for_the_permission_the_api_asks_for(
    client: Client, demo_registry: MLRegistry
) -> None:
    """Regression: the action asked for change_mlalgorithm where the API's status write asks
    for add_mlalgorithmstatus, so staff with only the first could promote in the admin."""
    et = MLAlgorithm.objects.get(name="extra trees")
    action = {"action": "promote_to_production", "_selected_action": [et.pk]}
    editor = operator("editor", permissions=["view_mlalgorithm", "change_mlalgorithm"])
    client.force_login(editor)
    page = client.get("/admin/endpoints/mlalgorithm/")
    assert "promote_to_production" not in page.content.decode()
    client.post("/admin/endpoints/mlalgorithm/", action, follow=True)
    assert et.statuses.get(active=True).status == "testing"
    promoter = operator("promoter", permissions=["view_mlalgorithm", "add_mlalgorithmstatus"])
    client.force_login(promoter)
    assert "promote_to_production" in client.get("/admin/endpoints/mlalgorithm/").content.decode()
    client.post("/admin/endpoints/mlalgorithm/", action, follow=True)
    assert et.statuses.get(active=True).status == "production"


def test_a_version_stays_with_its_endpoint(client: Client, demo_registry: MLRegistry) -> None:
    """Regression: editing parent_endpoint moved a version to another endpoint, which then
    answered 400 ambiguous_algorithm. Name, version and endpoint are what a version is."""
    from apps.endpoints.models import Endpoint

    et = MLAlgorithm.objects.get(name="extra trees")
    other = Endpoint.objects.create(name="other", owner="x")
    client.force_login(operator("editor", permissions=["view_mlalgorithm", "change_mlalgorithm"]))
    page = client.get(f"/admin/endpoints/mlalgorithm/{et.pk}/change/")
    assert page.status_code == 200
    assert 'name="parent_endpoint"' not in page.content.decode()
    client.post(
        f"/admin/endpoints/mlalgorithm/{et.pk}/change/",
        {"parent_endpoint": other.pk, "name": "moved", "version": "9", "description": "d"},
    )
    et.refresh_from_db()
    assert (et.parent_endpoint.name, et.name, et.version) == (
        "income_classifier",
        "extra trees",
        "0.0.1",
    )


def test_api_tokens_are_not_listed_in_the_admin(
    client: Client, admin_client_: Client, django_user_model: type[User]
) -> None:
    """Regression: staff with view_tokenproxy read every API token, the superuser's too
    (DRF's admin shows raw keys). manage.py drf_create_token makes one."""
    from rest_framework.authtoken.models import Token

    key = Token.objects.create(user=django_user_model.objects.get(username="admin")).key
    assert admin_client_.get("/admin/authtoken/tokenproxy/").status_code == 404
    assert key not in admin_client_.get("/admin/").content.decode()


def test_anonymous_users_are_sent_to_the_login_page(client: Client) -> None:
    response = client.get("/admin/endpoints/mlalgorithm/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_requests_deleted_in_the_admin_leave_the_feedback_counts(
    admin_client_: Client, demo_registry: MLRegistry
) -> None:
    from django.contrib.auth.models import AnonymousUser

    from apps.endpoints import policy
    from apps.endpoints.serving import feedback, selectors

    rf = MLAlgorithm.objects.get(name="random forest")
    rows = [
        MLRequest.objects.create(
            input_data={}, full_response={}, response="<=50K", parent_mlalgorithm=rf
        )
        for _ in range(4)
    ]
    anonymous = policy.Actor(user=AnonymousUser())
    for row in rows:
        token = feedback.token_for(row.pk)
        feedback.give(request_id=row.pk, value="<=50K", token=token, actor=anonymous)
    assert [c.given for c in selectors.feedback_counts()] == [4]
    admin_client_.post(
        "/admin/endpoints/mlrequest/",
        {"action": "delete_selected", "_selected_action": [r.pk for r in rows[:2]], "post": "yes"},
    )
    admin_client_.post(f"/admin/endpoints/mlrequest/{rows[2].pk}/delete/", {"post": "yes"})
    assert list(MLRequest.objects.values_list("pk", flat=True)) == [rows[3].pk]
    assert selectors.feedback_counts() == selectors.feedback_counts_by_scan()
    assert [(c.given, c.correct) for c in selectors.feedback_counts()] == [(1, 1)]
