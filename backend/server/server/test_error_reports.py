"""Django's debug error page (``make run``, DEBUG on) and its error reports never show the
credentials in the service's URLs, from the settings or from the environment (which
runserver puts in request.META)."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from django.test import RequestFactory
from django.views.debug import get_default_exception_reporter_filter, technical_500_response

SECRET = "sekrit"
# What runserver's request.META holds besides the request: the process environment.
ENVIRONMENT = {
    "DATABASE_URL": f"postgres://user:{SECRET}@db.example/ml",
    "CELERY_BROKER_URL": f"amqp://guest:{SECRET}@rabbit.example:5672//",
    "CACHE_URL": f"redis://:{SECRET}@cache.example:6379/0",
    "SENTRY_DSN": f"https://{SECRET}@sentry.example/1",
    "PGPASSWORD": SECRET,
    "HOME": "/home/ana",
}


def failing_view(url: str) -> None:
    # A local variable holding a connection string, as a failing connect() has.
    conninfo = f"host=db.example user=user password={SECRET}"
    raise RuntimeError(f"cannot connect to {url.split('@')[-1]} ({len(conninfo)})")


def error_page(settings: Any, accept: str) -> str:
    settings.DEBUG = True
    settings.CELERY_BROKER_URL = ENVIRONMENT["CELERY_BROKER_URL"]
    # Under a name no pattern hides: found by its value.
    settings.LOG_ARCHIVE_LOCATION = f"https://archive:{SECRET}@archive.example/logs"
    request = RequestFactory().get("/api/v1/boom", HTTP_ACCEPT=accept)
    request.META.update(ENVIRONMENT)
    try:
        failing_view(ENVIRONMENT["DATABASE_URL"])
    except RuntimeError:
        response = technical_500_response(request, *sys.exc_info())
    return response.content.decode()


@pytest.mark.parametrize("accept", ["text/html", "text/plain"])
def test_the_debug_error_page_shows_no_credential(settings: Any, accept: str) -> None:
    page = error_page(settings, accept)
    assert SECRET not in page
    # ...and still says what it can: the names, the hosts, the rest of the environment.
    assert "DATABASE_URL" in page and "CELERY_BROKER_URL" in page and "/home/ana" in page
    assert "archive.example/logs" in page
    if accept == "text/html":  # only the HTML page shows the frames' local variables
        assert "host=db.example" in page and "conninfo" in page


def test_it_is_the_filter_every_error_report_uses() -> None:
    from server.error_reports import SecretsFilter

    assert isinstance(get_default_exception_reporter_filter(), SecretsFilter)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("postgres://user:pw@db/ml", "postgres://user:********************@db/ml"),
        ("redis://:pw@cache:6379/0", "redis://:********************@cache:6379/0"),
        ("host=db password=pw port=5432", "host=db password=******************** port=5432"),
        ("https://example.com/a:b@c", "https://example.com/a:b@c"),  # no credentials
        ("plain text", "plain text"),
    ],
)
def test_a_credential_in_a_value_is_masked_and_the_rest_kept(value: str, shown: str) -> None:
    from server.error_reports import SecretsFilter

    assert SecretsFilter().cleanse_setting("LOCATION", value) == shown
