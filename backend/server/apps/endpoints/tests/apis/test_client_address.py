"""Who a client is, for rates and login lockouts: its peer address, and X-Forwarded-For only
as far as NUM_PROXIES trusts it (apps/endpoints/throttling.py, client_address)."""

from __future__ import annotations

import runpy
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from apps.endpoints.api.throttling import client_address
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

PREDICT = "/api/v1/income_classifier/predict"
PROXY = "192.0.2.10"  # documentation ranges: nothing is sent anywhere


@pytest.fixture
def five_a_minute(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # DRF reads the rates when the class is defined; set them as a deployment would.
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"predict": "5/minute"})
    cache.clear()
    yield
    cache.clear()


def num_proxies(settings: Any, value: int | None) -> None:
    # A new REST_FRAMEWORK makes DRF reload its settings (rest_framework.settings).
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": value}


def predict_with(forwarded_for: str) -> int:
    client = APIClient(REMOTE_ADDR=PROXY)
    response = client.post(
        PREDICT, SAMPLE_RECORD, format="json", HTTP_X_FORWARDED_FOR=forwarded_for
    )
    return response.status_code


@pytest.mark.django_db
@pytest.mark.usefixtures("five_a_minute")
def test_rotating_x_forwarded_for_does_not_escape_a_rate(demo_registry: MLRegistry) -> None:
    assert django_settings.REST_FRAMEWORK["NUM_PROXIES"] == 0  # the default
    codes = [predict_with(f"203.0.113.{i}") for i in range(30)]
    assert codes == [200] * 5 + [429] * 25


@pytest.mark.django_db
@pytest.mark.usefixtures("five_a_minute")
def test_drfs_own_default_trusted_the_header(demo_registry: MLRegistry, settings: Any) -> None:
    # The finding this setting fixes, kept as the control: NUM_PROXIES=None trusts the
    # whole header, and every new value is a new client.
    num_proxies(settings, None)
    assert {predict_with(f"203.0.113.{i}") for i in range(30)} == {200}


@pytest.mark.django_db
@pytest.mark.usefixtures("five_a_minute")
def test_behind_one_proxy_the_client_is_the_entry_it_appended(
    demo_registry: MLRegistry, settings: Any
) -> None:
    num_proxies(settings, 1)
    # whatever the client writes before it, our proxy appends the address it saw
    codes = [predict_with(f"203.0.113.{i}, 198.51.100.7") for i in range(30)]
    assert codes == [200] * 5 + [429] * 25
    assert predict_with("198.51.100.8") == 200  # another client behind the same proxy
    # not an address (sent past the proxy): the peer, the proxy here, not one client a value
    assert [predict_with(f"junk-{i}") for i in range(6)] == [200] * 5 + [429]


@pytest.mark.parametrize(
    ("proxies", "forwarded_for", "expected"),
    [
        (0, None, "192.0.2.10"),
        (0, "203.0.113.1", "192.0.2.10"),
        (1, None, "192.0.2.10"),
        (1, "203.0.113.1", "203.0.113.1"),
        (1, "203.0.113.1, 198.51.100.7", "198.51.100.7"),
        (2, "203.0.113.1, 198.51.100.7, 192.0.2.99", "198.51.100.7"),
        (2, "198.51.100.7", "198.51.100.7"),  # fewer entries than proxies: the first
        (1, "2001:DB8::1", "2001:db8::1"),
        (1, "not-an-address", "192.0.2.10"),
        (1, "", "192.0.2.10"),
    ],
)
def test_client_address(
    proxies: int, forwarded_for: str | None, expected: str, settings: Any
) -> None:
    num_proxies(settings, proxies)
    headers: dict[str, Any] = {}
    if forwarded_for is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded_for
    request = RequestFactory().get("/", REMOTE_ADDR=PROXY, **headers)
    assert client_address(request) == expected


def test_no_address_at_all_is_empty() -> None:
    request = RequestFactory().get("/")
    del request.META["REMOTE_ADDR"]
    assert client_address(request) == ""


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    monkeypatch.setenv("SECRET_KEY", "x")
    for name in ("NUM_PROXIES", "LOGIN_FAILURE_LIMIT", "LOGIN_LOCKOUT_MINUTES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(django_settings.BASE_DIR / "server" / "settings.py"))


def test_the_settings_defaults_and_their_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = _settings(monkeypatch)
    assert loaded["REST_FRAMEWORK"]["NUM_PROXIES"] == 0
    assert loaded["AXES_FAILURE_LIMIT"] == 10
    assert loaded["AXES_COOLOFF_TIME"].total_seconds() == 15 * 60
    loaded = _settings(
        monkeypatch, NUM_PROXIES="1", LOGIN_FAILURE_LIMIT="5", LOGIN_LOCKOUT_MINUTES="60"
    )
    assert loaded["REST_FRAMEWORK"]["NUM_PROXIES"] == 1
    assert loaded["AXES_FAILURE_LIMIT"] == 5
    assert loaded["AXES_COOLOFF_TIME"].total_seconds() == 3600


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NUM_PROXIES", "-1"),
        ("NUM_PROXIES", "one"),
        ("LOGIN_FAILURE_LIMIT", "0"),
        ("LOGIN_LOCKOUT_MINUTES", "0"),
        ("LOGIN_LOCKOUT_MINUTES", "1.5"),
    ],
)
def test_a_nonsense_value_fails_at_start(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ImproperlyConfigured, match=name):
        _settings(monkeypatch, **{name: value})
