"""Failed logins lock a user name and an address for a while (apps/endpoints/login_attempts.py):
HTTP Basic, the admin's and the browsable API's login forms, tokens."""

from __future__ import annotations

import base64
import io
import json
import time
import types
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.db.models import F
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

pytestmark = pytest.mark.django_db

LIMIT = 3
NAME_LIMIT = 7  # a name alone, from any addresses
LOCK = timedelta(minutes=15)
ME = "192.0.2.1"  # the client's address (documentation ranges: nothing is sent anywhere)
ELSEWHERE = "198.51.100.2"
PRIVATE = "/api/v1/mlrequests"  # 401 without credentials, 200 with a user's
PREDICT = "/api/v1/income_classifier/predict"


@pytest.fixture(autouse=True)
def lockout(settings: Any) -> Iterator[None]:
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.LOGIN_NAME_FAILURE_LIMIT = NAME_LIMIT
    settings.AXES_COOLOFF_TIME = LOCK
    cache.clear()  # the token failures
    yield
    cache.clear()


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", password="right")


@pytest.fixture
def bob(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("bob", password="right")


def basic(username: str, password: str, address: str = ME, **headers: Any) -> Any:
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    client = APIClient(REMOTE_ADDR=address)
    return client.get(PRIVATE, HTTP_AUTHORIZATION=f"Basic {credentials}", **headers)


def fail(times: int, username: str = "alice", address: str = ME) -> list[int]:
    return [basic(username, "wrong", address).status_code for _ in range(times)]


def assert_locked(response: Any) -> None:
    assert response.status_code == 429, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "locked_out"
    assert "Too many failed logins" in error["message"]
    assert int(response["Retry-After"]) == LOCK.total_seconds()


def pass_time(delta: timedelta) -> None:
    """As if the failures recorded so far had happened ``delta`` earlier."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - delta)


# -- HTTP Basic --------------------------------------------------------------------------


def test_wrong_basic_passwords_lock_the_name_even_for_the_right_password(alice: Any) -> None:
    assert fail(LIMIT - 1) == [401] * (LIMIT - 1)
    assert basic("alice", "wrong").json()["error"]["code"] == "locked_out"  # the limit
    with mock.patch.object(ModelBackend, "authenticate", autospec=True) as check:
        locked = basic("alice", "right")
    assert_locked(locked)
    assert check.call_count == 0  # refused before the password was hashed
    # and the tries while locked were not counted: the lock ends on time
    assert AccessAttempt.objects.get().failures_since_start == LIMIT


def test_a_password_is_still_checked_below_the_limit(alice: Any) -> None:
    # the control for the test above: the spy sees a check when nothing is locked
    with mock.patch.object(ModelBackend, "authenticate", autospec=True, return_value=None) as check:
        assert basic("alice", "right").status_code == 401
    assert check.call_count == 1
    assert basic("alice", "right").status_code == 200


def test_rotating_x_forwarded_for_does_not_escape_the_lock(alice: Any, bob: Any) -> None:
    for i in range(LIMIT):
        basic(f"user{i}", "wrong", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}")
    assert_locked(basic("bob", "right", HTTP_X_FORWARDED_FOR="203.0.113.200"))
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {ME}


def test_a_locked_address_is_locked_for_every_name(alice: Any, bob: Any) -> None:
    for i in range(LIMIT):  # a different name each time: no name reaches the limit
        basic(f"guess{i}", "wrong")
    assert_locked(basic("bob", "right"))
    assert basic("bob", "right", ELSEWHERE).status_code == 200


def test_wrong_passwords_for_a_name_lock_that_name_from_that_address_only(
    alice: Any, bob: Any
) -> None:
    """Regression: ten wrong passwords for an operator's name (public in created_by and on
    the reports) from one address locked the operator out from every address."""
    fail(LIMIT, "alice", ME)
    assert_locked(basic("alice", "right", ME))
    assert basic("alice", "right", ELSEWHERE).status_code == 200  # the operator elsewhere


def test_a_name_is_locked_from_every_address_only_past_a_much_higher_count(
    alice: Any, bob: Any
) -> None:
    for i in range(NAME_LIMIT - 1):  # a different address each time: no pair, no address
        basic("alice", "wrong", f"203.0.113.{i}")
    assert basic("alice", "right", ELSEWHERE).status_code == 200
    basic("alice", "wrong", "203.0.113.200")  # the name's limit
    assert_locked(basic("alice", "right", ELSEWHERE))
    assert basic("bob", "right", ELSEWHERE).status_code == 200


def test_the_lock_expires(alice: Any) -> None:
    fail(LIMIT)
    pass_time(LOCK - timedelta(minutes=1))
    assert_locked(basic("alice", "right"))
    pass_time(timedelta(minutes=1, seconds=1))
    assert basic("alice", "right").status_code == 200
    assert fail(1) == [401]  # counting starts again


def test_an_operator_can_lift_a_lock(alice: Any) -> None:
    fail(LIMIT)
    assert_locked(basic("alice", "right"))
    call_command("axes_reset_username", "alice", stdout=io.StringIO())
    assert basic("alice", "right").status_code == 200


def test_a_basic_failure_does_not_read_the_body(alice: Any, settings: Any) -> None:
    # axes records a failure's form fields; reading them from a DRF request parses the body
    # (here a JSON error, a 400 instead of the 401) before the credentials are refused
    settings.PREDICT_ACCESS = "token"  # else predict reads no credentials at all
    credentials = base64.b64encode(b"alice:wrong").decode()
    response = APIClient(REMOTE_ADDR=ME).post(
        PREDICT, "{nope", content_type="application/json", HTTP_AUTHORIZATION=f"Basic {credentials}"
    )
    assert response.status_code == 401, response.content
    assert AccessAttempt.objects.get().post_data == ""


@pytest.mark.parametrize("username", ["a" * 151, "a" * 300, "al\x00ice"])
def test_a_user_name_no_user_can_have_is_a_401(username: str, alice: Any) -> None:
    response = basic(username, "wrong")
    assert response.status_code == 401, response.content[:300]
    assert response.json()["error"]["code"] == "authentication_failed"


# -- The login forms ---------------------------------------------------------------------


@pytest.mark.parametrize("login", ["/admin/login/", "/api-auth/login/"])
def test_a_login_form_locks_with_a_plain_429(login: str, django_user_model: Any) -> None:
    django_user_model.objects.create_user("ops", password="right", is_staff=True)
    client = Client(REMOTE_ADDR=ME)

    def log_in(password: str) -> Any:
        return client.post(login, {"username": "ops", "password": password})

    assert [log_in("wrong").status_code for _ in range(LIMIT - 1)] == [200] * (LIMIT - 1)
    for password in ("wrong", "right"):  # the failure that locks, then the right password
        page = log_in(password)
        assert page.status_code == 429
        assert page["Content-Type"].startswith("text/plain")
        assert "Too many failed logins" in page.content.decode()
        assert int(page["Retry-After"]) == LOCK.total_seconds()
    pass_time(LOCK + timedelta(seconds=1))
    assert log_in("right").status_code == 302  # logged in


def test_a_successful_login_forgets_that_names_failures_from_that_address(
    django_user_model: Any,
) -> None:
    django_user_model.objects.create_user("ops", password="right", is_staff=True)
    client = Client(REMOTE_ADDR=ME)

    def log_in(username: str, password: str) -> int:
        return client.post(
            "/admin/login/", {"username": username, "password": password}
        ).status_code

    assert [log_in("ops", "wrong") for _ in range(LIMIT - 1)] == [200] * (LIMIT - 1)
    assert log_in("ops", "right") == 302
    client.logout()
    assert [log_in("ops", "wrong") for _ in range(LIMIT - 1)] == [200] * (LIMIT - 1)
    assert log_in("ops", "right") == 302  # not locked: the earlier failures were forgotten


def test_a_login_does_not_forget_the_addresss_failures_at_other_names(
    django_user_model: Any,
) -> None:
    # what axes' own AXES_RESET_ON_SUCCESS would allow: an account of one's own to log in
    # with between guesses at other names, and the address never reaches its limit
    django_user_model.objects.create_user("mallory", password="right", is_staff=True)
    client = Client(REMOTE_ADDR=ME)

    def log_in(username: str, password: str) -> int:
        return client.post(
            "/admin/login/", {"username": username, "password": password}
        ).status_code

    assert [log_in(f"guess{i}", "wrong") for i in range(LIMIT - 1)] == [200] * (LIMIT - 1)
    assert log_in("mallory", "right") == 302
    client.logout()
    assert log_in("guess9", "wrong") == 429


def test_the_admin_lists_the_failures(admin_client: Client) -> None:
    fail(1, "mallory")
    page = admin_client.get("/admin/axes/accessattempt/")
    assert page.status_code == 200
    assert "mallory" in page.content.decode()


# -- Tokens ------------------------------------------------------------------------------


def token_call(key: str, address: str = ME, **headers: Any) -> Any:
    client = APIClient(REMOTE_ADDR=address)
    return client.get(PRIVATE, HTTP_AUTHORIZATION=f"Token {key}", **headers)


def test_wrong_tokens_lock_the_address_for_a_while(alice: Any) -> None:
    key = Token.objects.create(user=alice).key
    codes = [token_call(f"{i:040x}").status_code for i in range(LIMIT - 1)]
    assert codes == [401] * (LIMIT - 1)
    assert_locked(token_call("f" * 40))  # the limit
    with CaptureQueriesContext(connection) as queries:
        assert_locked(token_call(key))  # even the right token
    assert len(queries) == 0  # refused before the lookup
    assert token_call(key, ELSEWHERE).status_code == 200
    assert token_call("0" * 40, HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 429
    later = time.time() + LOCK.total_seconds() + 1
    with mock.patch(
        "django.core.cache.backends.locmem.time", types.SimpleNamespace(time=lambda: later)
    ):
        assert token_call(key).status_code == 200


def test_a_token_with_a_nul_is_a_401(alice: Any) -> None:
    response = token_call("ab\x00cd")
    assert response.status_code == 401, response.content
    assert response.json()["error"]["code"] == "authentication_failed"


def test_the_right_token_is_not_counted(alice: Any) -> None:
    key = Token.objects.create(user=alice).key
    assert {token_call(key).status_code for _ in range(LIMIT + 2)} == {200}


# -- What it costs where no one logs in ---------------------------------------------------


def axes_queries(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "axes_" in q["sql"]]


@pytest.mark.parametrize("access", ["open", "token"])
def test_no_axes_query_on_a_predict_without_a_password(
    access: str, demo_registry: MLRegistry, alice: Any, settings: Any
) -> None:
    settings.PREDICT_ACCESS = access
    key = Token.objects.create(user=alice).key
    headers: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Token {key}"} if access == "token" else {}
    with CaptureQueriesContext(connection) as queries:
        response = APIClient(REMOTE_ADDR=ME).post(
            PREDICT, json.dumps(SAMPLE_RECORD), content_type="application/json", **headers
        )
    assert response.status_code == 200, response.content
    assert axes_queries(queries) == []


def test_a_basic_request_costs_one_axes_query_per_lock(alice: Any) -> None:
    with CaptureQueriesContext(connection) as queries:
        assert basic("alice", "right").status_code == 200
    # the pair and the address (AXES_LOCKOUT_PARAMETERS), and the name alone
    assert len(axes_queries(queries)) == 3
