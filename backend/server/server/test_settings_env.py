"""Settings come from the environment and fail loudly on nonsense."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

SETTINGS = str(Path(__file__).with_name("settings.py"))
VARS = (
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "MODEL_ARTIFACTS_PATH",
    "DEV_SECRET_KEY_FILE",
)


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(SETTINGS)


def test_debug_is_off_and_a_secret_key_is_required_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY is not set"):
        load(monkeypatch)
    settings = load(monkeypatch, SECRET_KEY="s3cret")
    assert settings["DEBUG"] is False and settings["SECRET_KEY"] == "s3cret"


def test_debug_on_gets_a_random_development_key_kept_in_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Regression: the development key was a constant in this repository, so anyone who
    could reach a `make run` server could forge its feedback tokens and signed values."""
    keyfile = tmp_path / "dev-secret-key"
    settings = load(monkeypatch, DEBUG="1", DEV_SECRET_KEY_FILE=str(keyfile))
    key = settings["SECRET_KEY"]
    assert settings["DEBUG"] is True and len(key) >= 50
    assert "development-only" not in key
    assert keyfile.read_text().strip() == key and keyfile.stat().st_mode & 0o077 == 0
    assert load(monkeypatch, DEBUG="1", DEV_SECRET_KEY_FILE=str(keyfile))["SECRET_KEY"] == key
    other = load(monkeypatch, DEBUG="1", DEV_SECRET_KEY_FILE=str(tmp_path / "other"))
    assert other["SECRET_KEY"] != key  # a new machine, a new key


def test_a_nonsense_boolean_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImproperlyConfigured, match="DEBUG must be"):
        load(monkeypatch, DEBUG="maybe", SECRET_KEY="x")


def test_default_database_is_a_sqlite_file_in_wal_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    db = load(monkeypatch, SECRET_KEY="x")["DATABASES"]["default"]
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert Path(db["NAME"]).is_absolute()
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]
    assert db["OPTIONS"]["timeout"] > 0


def test_database_url_selects_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch, SECRET_KEY="x", DATABASE_URL="postgres://pg@db.example:5433/ml")
    db = settings["DATABASES"]["default"]
    assert db["ENGINE"] == "server.postgresql"  # Django's, with a cheaper health check
    assert (db["HOST"], db["PORT"], db["NAME"], db["USER"]) == ("db.example", 5433, "ml", "pg")
    assert db["CONN_HEALTH_CHECKS"] is True
    stock = load(
        monkeypatch, SECRET_KEY="x", DATABASE_URL="postgres://pg@db/ml", DB_HEALTH_CHECK="ping"
    )
    assert stock["DATABASES"]["default"]["ENGINE"] == "django.db.backends.postgresql"
    with pytest.raises(ImproperlyConfigured, match="DB_HEALTH_CHECK"):
        load(monkeypatch, SECRET_KEY="x", DATABASE_URL="postgres://pg@db/ml", DB_HEALTH_CHECK="no")


def test_allowed_hosts_and_artifacts_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = load(monkeypatch, SECRET_KEY="x")
    assert {"localhost", "127.0.0.1"} <= set(settings["ALLOWED_HOSTS"])
    assert settings["MODEL_ARTIFACTS_PATH"].is_absolute()
    settings = load(
        monkeypatch,
        SECRET_KEY="x",
        ALLOWED_HOSTS="api.example, 10.0.0.1",
        MODEL_ARTIFACTS_PATH=str(tmp_path),
    )
    assert settings["ALLOWED_HOSTS"] == ["api.example", "10.0.0.1"]
    assert settings["MODEL_ARTIFACTS_PATH"] == tmp_path.resolve()


def test_a_relative_artifacts_path_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImproperlyConfigured, match="must be an absolute path"):
        load(monkeypatch, SECRET_KEY="x", MODEL_ARTIFACTS_PATH="research/artifacts")


@pytest.mark.parametrize("name", ["PREDICT_THROTTLE_RATE", "MANAGEMENT_THROTTLE_RATE"])
@pytest.mark.parametrize("rate", ["lots", "100", "100/fortnight", "x/second", "-1/s", "0/s"])
def test_a_nonsense_rate_fails_at_start_not_at_the_first_request(
    monkeypatch: pytest.MonkeyPatch, name: str, rate: str
) -> None:
    # Found in review: PREDICT_THROTTLE_RATE=lots started, then every predict was a 500.
    with pytest.raises(ImproperlyConfigured, match=name):
        load(monkeypatch, SECRET_KEY="x", **{name: rate})


@pytest.mark.parametrize("rate", ["100/second", "5/minute", "1000/hour", "10/day", "3/s", "7/m"])
def test_rates_in_drfs_format_are_taken(monkeypatch: pytest.MonkeyPatch, rate: str) -> None:
    from rest_framework.throttling import SimpleRateThrottle

    settings = load(monkeypatch, SECRET_KEY="x", PREDICT_THROTTLE_RATE=rate)
    taken = settings["REST_FRAMEWORK"]["DEFAULT_THROTTLE_RATES"]["predict"]
    assert taken == rate
    # A throttle parses its rate when it is made, as DRF makes one per throttled request.
    throttle = type("Probe", (SimpleRateThrottle,), {"rate": taken})()
    assert throttle.num_requests > 0 and throttle.duration > 0


def test_a_nonsense_default_status_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImproperlyConfigured, match="PREDICT_DEFAULT_STATUS"):
        load(monkeypatch, SECRET_KEY="x", PREDICT_DEFAULT_STATUS="live")
    settings = load(monkeypatch, SECRET_KEY="x", PREDICT_DEFAULT_STATUS="testing")
    assert settings["PREDICT_DEFAULT_STATUS"] == "testing"


def test_the_statuses_settings_know_are_the_models_statuses() -> None:
    from apps.endpoints.models import MLAlgorithmStatus
    from server.env import STATUSES

    assert set(STATUSES) == set(MLAlgorithmStatus.Status.values)


def test_the_metrics_token_is_off_by_default_and_must_fit_in_a_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("METRICS_TOKEN", raising=False)
    assert load(monkeypatch, SECRET_KEY="x")["METRICS_TOKEN"] == ""
    settings = load(monkeypatch, SECRET_KEY="x", METRICS_TOKEN=" s3cret-Token_1 ")
    assert settings["METRICS_TOKEN"] == "s3cret-Token_1"
    for bad in ("two words", "caf\u00e9"):
        with pytest.raises(ImproperlyConfigured, match="METRICS_TOKEN must be") as raised:
            load(monkeypatch, SECRET_KEY="x", METRICS_TOKEN=bad)
        assert bad not in str(raised.value)  # a secret is never echoed


def test_postgresql_prepares_statements_and_commits_durably_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pg = "postgres://postgres@127.0.0.1:5432/x"
    options = load(monkeypatch, SECRET_KEY="x", DATABASE_URL=pg)["DATABASES"]["default"]["OPTIONS"]
    assert options["server_side_binding"] is True and "options" not in options
    monkeypatch.setenv("DB_SERVER_SIDE_BINDING", "0")
    monkeypatch.setenv("DB_SYNCHRONOUS_COMMIT", "off")
    options = load(monkeypatch, SECRET_KEY="x", DATABASE_URL=pg)["DATABASES"]["default"]["OPTIONS"]
    assert options["server_side_binding"] is False
    assert options["options"] == "-c synchronous_commit=off"
    monkeypatch.setenv("DB_SYNCHRONOUS_COMMIT", "sometimes")
    with pytest.raises(ImproperlyConfigured, match="DB_SYNCHRONOUS_COMMIT must be"):
        load(monkeypatch, SECRET_KEY="x", DATABASE_URL=pg)
    sqlite = load(monkeypatch, SECRET_KEY="x", DATABASE_URL="sqlite:///db.sqlite3")
    assert "server_side_binding" not in sqlite["DATABASES"]["default"]["OPTIONS"]
