"""``manage.py api_token``: a script's credentials in one line."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from apps.endpoints.tests.factories import operator

pytestmark = pytest.mark.django_db


def token_of(name: str) -> str:
    out = io.StringIO()
    call_command("api_token", name, stdout=out)
    return out.getvalue().strip()


def test_the_key_alone_is_printed_the_same_each_time_and_it_authenticates() -> None:
    operator("scripts", permissions=["view_mlrequest"])
    key = token_of("scripts")
    assert key == token_of("scripts") and len(key) == 40
    api = APIClient()
    assert api.get("/api/v1/mlrequests").status_code in (401, 403)
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/mlrequests").status_code == 200


def test_an_unknown_user_is_an_error_that_says_what_to_do() -> None:
    with pytest.raises(CommandError, match="make superuser"):
        token_of("nobody")
