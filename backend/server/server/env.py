"""Reading settings from the environment, failing loudly on a value that makes no sense."""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

# The statuses an algorithm can have (apps/endpoints/models.py, MLAlgorithmStatus.Status;
# a test keeps the two in step). Settings are read before the apps load, so they are
# listed here rather than imported.
STATUSES = ("testing", "staging", "production", "ab_testing", "shadow")

# DRF's rate format: requests per second, minute, hour or day ("100/second", "5/m").
_RATE = re.compile(r"[1-9][0-9]*/(s|m|h|d)[a-z]*")

_HEADER_TOKEN = re.compile(r"[!-~]+")  # visible ASCII, as RFC 9110 allows in a header

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}."
    )


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number; got {raw!r}.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be {minimum} or more; got {raw!r}.")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number; got {raw!r}.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_str(name: str, default: str) -> str:
    return os.environ.get(name) or default


def env_token(name: str) -> str:
    """A secret a client sends in a header (``Authorization: Bearer <it>``), or "" when
    unset. Visible ASCII without spaces: a header cannot carry more, and a token no client
    can send would refuse every request. The value is never echoed in the error."""
    value = (os.environ.get(name) or "").strip()
    if value and not _HEADER_TOKEN.fullmatch(value):
        raise ImproperlyConfigured(
            f"{name} must be printable ASCII without spaces (it is sent in a header)."
        )
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default).strip()
    if value not in choices:
        expected = " or ".join(repr(c) for c in choices)
        raise ImproperlyConfigured(f"{name} must be {expected}; got {value!r}.")
    return value


def env_rate(name: str, default: str | None = None) -> str | None:
    """A throttle rate in DRF's format; ``default`` when unset, None (no limit) when set
    empty. Checked here: DRF parses it only at the first throttled request, where a typo
    is a 500."""
    if name not in os.environ:
        return default
    raw = os.environ[name].strip()
    if not raw:
        return None
    if not _RATE.fullmatch(raw):
        raise ImproperlyConfigured(
            f"{name} must be a number of requests per second, minute, hour or day, e.g. "
            f"100/second or 5/minute; got {raw!r}."
        )
    return raw


def env_json(name: str, default: Any) -> Any:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be JSON; got {raw!r} ({exc}).") from None
    if type(value) is not type(default):
        raise ImproperlyConfigured(f"{name} must be a JSON {type(default).__name__}; got {raw!r}.")
    return value


def env_cache(name: str) -> dict[str, Any]:
    """``CACHES["default"]`` from a URL: ``locmem://`` (the default: per process),
    ``redis://host:6379/0`` (shared; Django's Redis backend), or ``db://[table]`` (shared
    through the database, no other service; the table is created by ``migrate``)."""
    raw = (os.environ.get(name) or "locmem://").strip()
    scheme, separator, rest = raw.partition("://")
    if scheme == "locmem" and separator:
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    if scheme in ("redis", "rediss") and separator:
        return {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": raw,
            # A Redis that does not answer must not hold a request for long: throttling
            # fails open (apps/endpoints/api/throttling.py) after this.
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    if scheme == "db" and separator:
        table = rest.strip("/") or "ml_pipeline_cache"
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", table):
            raise ImproperlyConfigured(
                f"{name}: the table name must be lower-case letters, digits and _; got {table!r}."
            )
        # Django's default of 300 entries would cull live counts once 300 clients are seen.
        return {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": table,
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    raise ImproperlyConfigured(
        f"{name} must be locmem://, redis://host:port/db or db://[table]; got "
        f"{_without_password(raw)!r}."
    )


def _without_password(url: str) -> str:
    # A mistyped URL is quoted in the error; its password must not reach the logs.
    return re.sub(r"//[^/@]*@", "//***@", url)


def development_secret_key(path: Path) -> str:
    """The development SECRET_KEY kept at ``path``: read, or made (random) and written
    readable by its owner only. Written aside and linked into place, which fails if the
    file exists: two processes starting at once (runserver, a management command) end up
    with the same, complete key."""
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    key = secrets.token_urlsafe(50)
    aside = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(key + "\n")
    try:
        os.link(aside, path)
    except FileExistsError:  # another process made it first
        return path.read_text(encoding="ascii").strip()
    finally:
        os.unlink(aside)
    return key
