"""Who may call what: PREDICT_ACCESS, DRF tokens, and the deployment checks."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from rest_framework.test import APIClient

from apps.endpoints.models import MLAlgorithm, MLRequest
from apps.endpoints.tests.factories import operator
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD

PREDICT = "/api/v1/income_classifier/predict"
CSV = ",".join(SAMPLE_RECORD) + "\n" + ",".join(str(v) for v in SAMPLE_RECORD.values()) + "\n"


def token_for(django_user_model: Any, username: str, *, staff: bool = False) -> str:
    """A DRF token for a new user; ``staff``: an operator (staff with the endpoints app's
    permissions)."""
    if staff:
        operator(username)
    else:
        django_user_model.objects.create_user(username, password="pw")
    out = io.StringIO()
    call_command("drf_create_token", username, stdout=out)  # DRF's own command
    return out.getvalue().split()[2]  # "Generated token <key> for user <name>"


def calls(client: APIClient, request_id: int, token: str = "") -> dict[str, int]:
    return {
        "predict": client.post(
            PREDICT, json.dumps(SAMPLE_RECORD), content_type="application/json"
        ).status_code,
        "batch": client.post(
            "/api/v1/batch-predict", {"file": SimpleUploadedFile("f.csv", CSV.encode())}
        ).status_code,
        "feedback": client.patch(
            f"/api/v1/mlrequests/{request_id}",
            {"feedback": ">50K", "feedback_token": token},
            format="json",
        ).status_code,
    }


@pytest.mark.django_db
def test_open_access_lets_anyone_predict_and_send_feedback(
    api: APIClient, demo_registry: MLRegistry, settings: Any
) -> None:
    settings.PREDICT_ACCESS = "open"
    served = api.post(PREDICT, SAMPLE_RECORD, format="json").json()
    assert calls(api, served["request_id"], served["feedback_token"]) == {
        "predict": 200,
        "batch": 200,
        "feedback": 200,
    }


@pytest.mark.django_db
def test_token_access_needs_a_token_for_predict_batch_and_feedback(
    api: APIClient, demo_registry: MLRegistry, settings: Any, django_user_model: Any
) -> None:
    settings.PREDICT_ACCESS = "token"
    key = token_for(django_user_model, "client")
    denied = calls(api, 1)
    assert denied == {"predict": 401, "batch": 401, "feedback": 401}
    assert MLRequest.objects.count() == 0
    response = api.post(PREDICT, json.dumps(SAMPLE_RECORD), content_type="application/json")
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"]  # tells the client how to authenticate
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    served = api.post(PREDICT, SAMPLE_RECORD, format="json").json()
    assert calls(api, served["request_id"], served["feedback_token"]) == {
        "predict": 200,
        "batch": 200,
        "feedback": 200,
    }
    api.credentials(HTTP_AUTHORIZATION="Token not-a-real-key")
    assert api.post(PREDICT, SAMPLE_RECORD, format="json").status_code == 401


@pytest.mark.django_db
def test_an_operator_token_may_change_statuses_and_a_user_token_may_not(
    api: APIClient, demo_registry: MLRegistry, django_user_model: Any
) -> None:
    rf = MLAlgorithm.objects.get(name="random forest")
    body = {"status": "staging", "parent_mlalgorithm": rf.pk}
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(django_user_model, 'user')}")
    assert api.post("/api/v1/mlalgorithmstatuses", body, format="json").status_code == 403
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(django_user_model, 'ops', staff=True)}")
    assert api.post("/api/v1/mlalgorithmstatuses", body, format="json").status_code == 201


def test_a_nonsense_predict_access_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    import runpy

    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.setenv("SECRET_KEY", "x")
    monkeypatch.setenv("PREDICT_ACCESS", "maybe")
    with pytest.raises(ImproperlyConfigured, match="PREDICT_ACCESS"):
        runpy.run_path(str(django_settings.BASE_DIR / "server" / "settings.py"))


def _check_deploy(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v for k, v in os.environ.items() if k not in ("DEBUG", "DJANGO_SETTINGS_MODULE")
    }
    environment.update(env, DJANGO_SETTINGS_MODULE="server.settings")
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=django_settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _warnings(done: subprocess.CompletedProcess[str]) -> set[str]:
    return set(re.findall(r"\(security\.(W\d+)\)", done.stdout + done.stderr))


KEY = "k3y-" + "".join(chr(97 + (i * 7) % 26) for i in range(60))


def test_check_deploy_passes_with_the_documented_production_settings() -> None:
    """docs/operations.md, "Production": a key, the host, behind TLS the redirect and preload."""
    documented = {
        "SECRET_KEY": KEY,
        "ALLOWED_HOSTS": "api.example.com",
        "SECURE_SSL_REDIRECT": "1",
        "SECURE_HSTS_PRELOAD": "1",
    }
    done = _check_deploy(**documented)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout
    # and it does flag what a careless deployment would get wrong
    careless = _check_deploy(**{**documented, "SECURE_COOKIES": "0", "SECURE_HSTS_SECONDS": "0"})
    assert careless.returncode != 0
    assert {"W004", "W012", "W016"} <= _warnings(careless)


def test_with_debug_off_hsts_and_secure_cookies_are_the_default() -> None:
    """Regression: production defaults had no HSTS and cookies without Secure; check
    --deploy with the flags docs/operations.md gives still warned W005 and W021. Left to the
    deployment now: only the redirect to HTTPS and HSTS preloading, which depend on it."""
    done = _check_deploy(SECRET_KEY=KEY, ALLOWED_HOSTS="api.example.com")
    assert _warnings(done) == {"W008", "W021"}, done.stdout + done.stderr


@pytest.mark.django_db
def test_a_client_over_its_rate_gets_429_with_retry_after(
    api: APIClient, demo_registry: MLRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.cache import cache
    from rest_framework.throttling import ScopedRateThrottle

    # DRF reads the rates when the class is defined; set them as a deployment would.
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"predict": "2/minute"})
    cache.clear()
    try:
        answers = [api.post(PREDICT, SAMPLE_RECORD, format="json") for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[2].json()["error"]["code"] == "throttled"
        assert int(answers[2]["Retry-After"]) > 0
        assert MLRequest.objects.count() == 2
        other = APIClient(REMOTE_ADDR="10.9.8.7")  # another client has its own allowance
        assert other.post(PREDICT, SAMPLE_RECORD, format="json").status_code == 200
    finally:
        cache.clear()


@pytest.mark.django_db
def test_without_a_rate_nothing_is_throttled(api: APIClient, demo_registry: MLRegistry) -> None:
    from django.conf import settings

    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["predict"] is None
    codes = {api.post(PREDICT, SAMPLE_RECORD, format="json").status_code for _ in range(30)}
    assert codes == {200}


@pytest.mark.django_db
def test_throttling_fails_open_while_its_cache_is_down(
    api: APIClient,
    demo_registry: MLRegistry,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from rest_framework.throttling import ScopedRateThrottle

    from server.env import env_cache

    # A Redis that is not there (nothing listens on port 1): the counts cannot be read.
    # (Changing CACHES makes Django drop its cache handles: django.test.signals.)
    monkeypatch.setenv("CACHE_URL", "redis://127.0.0.1:1/0")
    settings.CACHES = {"default": env_cache("CACHE_URL")}
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"predict": "1/minute"})
    answers = [api.post(PREDICT, SAMPLE_RECORD, format="json") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]  # served, not limited
    assert "Throttling is off: the cache is unavailable" in caplog.text
    settings.METRICS_TOKEN = "probe-token"  # what reads /readyz's checks
    ready = api.get("/readyz", HTTP_AUTHORIZATION="Bearer probe-token")
    assert ready.status_code == 200, ready.content  # predictions still work
    assert ready.json()["cache"].startswith("unavailable")
