"""CACHE_URL shares the throttling counts between server processes: two servers on one
database allow a client its rate once in all, not once each. The per-process default
(locmem) is the control: there each server counts alone."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import pytest
from django.db import connection

from apps.endpoints.tests.factories import algorithm
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD
from apps.ops.tests.live_server import serving_together
from server.env import env_cache

PREDICT = "/api/v1/income_classifier/predict"
REDIS = ("127.0.0.1", 6379)


def redis_answers() -> bool:
    try:
        socket.create_connection(REDIS, timeout=0.5).close()
        return True
    except OSError:
        return False


def test_cache_urls_pick_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.exceptions import ImproperlyConfigured

    for url, backend in [
        (None, "locmem.LocMemCache"),
        ("redis://127.0.0.1:6379/1", "redis.RedisCache"),
        ("db://", "db.DatabaseCache"),
    ]:
        if url is None:
            monkeypatch.delenv("CACHE_URL", raising=False)
        else:
            monkeypatch.setenv("CACHE_URL", url)
        assert env_cache("CACHE_URL")["BACKEND"].endswith(backend)
    monkeypatch.setenv("CACHE_URL", "db://throttle")
    assert env_cache("CACHE_URL")["LOCATION"] == "throttle"
    for wrong in ("memcached://x", "redis", "db://a;drop table b", "db://Auth-User"):
        monkeypatch.setenv("CACHE_URL", wrong)
        with pytest.raises(ImproperlyConfigured):
            env_cache("CACHE_URL")
    monkeypatch.setenv("CACHE_URL", "memcached://user:s3cret@cache:11211")
    with pytest.raises(ImproperlyConfigured) as refused:
        env_cache("CACHE_URL")
    assert "s3cret" not in str(refused.value)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["locmem", "db", "redis"])
def test_two_servers_share_a_rate_through_a_shared_cache(
    kind: str, registry: MLRegistry, artifacts_dir: Path, tmp_path: Path
) -> None:
    if kind == "redis" and not redis_answers():
        pytest.skip("no Redis at 127.0.0.1:6379 (every machine of this project has one)")
    algorithm(registry, name="forest")
    # A fresh count, whatever ran before, and nobody else's keys touched on a shared Redis.
    run = secrets.token_hex(4)
    table, prefix = f"throttle_{run}", f"throttle-test-{run}"
    cache_url = {
        "locmem": "locmem://",
        "db": f"db://{table}",
        "redis": "redis://127.0.0.1:6379/0",
    }[kind]
    env = {
        "CACHE_URL": cache_url,
        "CACHE_KEY_PREFIX": prefix,
        "PREDICT_THROTTLE_RATE": "3/minute",
        "WEB_CONCURRENCY": "1",
        # scikit-learn, as in the batch-job workers' tests: the first predict of each
        # server would otherwise spend seconds compiling the model, which is not the subject
        "ML_COMPILED_INFERENCE": "0",
    }
    # Started together, as the hosts of one deployment: the first migrates (and creates the
    # cache table, on migrate), the second does not (SKIP_MIGRATE, as bin/serve documents
    # for hosts migrated by a release step elsewhere); it is first called after the first
    # answers. Two migrates on one SQLite file at once could both try to create the table.
    hosts = [
        (artifacts_dir, _folder(tmp_path / "a"), env),
        (artifacts_dir, _folder(tmp_path / "b"), {**env, "SKIP_MIGRATE": "1"}),
    ]
    try:
        with serving_together(*hosts) as (first, second):
            statuses = [
                server.call("POST", PREDICT, SAMPLE_RECORD)[0]
                for server in (first, first, second, second)
            ]
    finally:
        if kind == "redis":
            _forget_redis_keys(prefix)
        elif kind == "db":
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {table}")
    if kind == "locmem":
        assert statuses == [200, 200, 200, 200]  # each server allowed 3
    else:
        assert statuses == [200, 200, 200, 429]  # 3 in all


def _forget_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis(*REDIS)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    assert keys, "the servers kept no count in Redis"
    client.delete(*keys)


def _folder(path: Path) -> Path:
    path.mkdir()
    return path
