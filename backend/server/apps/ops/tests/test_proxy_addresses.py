"""Behind the shipped nginx (deploy/nginx/ml_pipeline.conf), with NUM_PROXIES=1 as its
header says: rates and login locks key on each client's own address, not on the proxy's,
and /metrics is served to the scraper's address only.

The clients are two loopback addresses: 127.0.0.1 (where the scraper runs) and ELSEWHERE.
With NUM_PROXIES=0 (the control) every client looks like the proxy, 127.0.0.1, and one
client's wrong passwords lock everyone out.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from apps.endpoints.tests.factories import algorithm
from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD
from apps.ops.tests.live_server import production_superuser, serving
from apps.ops.tests.test_slow_clients import ELSEWHERE, PREDICT, call, nginx_or_skip, proxying

LIMIT = 3  # LOGIN_FAILURE_LIMIT and predictions a minute, small to keep the test short
LOG = "/api/v1/mlrequests"


def basic(name: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


def predict(port: int, source: str, forwarded_for: str) -> int:
    headers = {"Content-Type": "application/json", "X-Forwarded-For": forwarded_for}
    body = json.dumps(SAMPLE_RECORD).encode()
    return call(port, "POST", PREDICT, body, headers, source=source)[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("num_proxies", ["1", "0"])
def test_behind_the_shipped_proxy_each_client_is_its_own_address(
    num_proxies: str, registry: MLRegistry, artifacts_dir: Path, tmp_path: Path
) -> None:
    nginx_or_skip()  # before the server starts: a skip should cost nothing
    algorithm(registry, name="forest")
    production_superuser("operator", "the-right-one-42")
    with (
        serving(
            artifacts_dir,
            tmp_path,
            NUM_PROXIES=num_proxies,
            WEB_CONCURRENCY="1",  # one process's rate counts (the default cache)
            PREDICT_THROTTLE_RATE=f"{LIMIT}/minute",
            LOGIN_FAILURE_LIMIT=str(LIMIT),
        ) as server,
        proxying(server.port, tmp_path) as proxy,
    ):
        # A client rotating X-Forwarded-For: nginx appends the address it saw.
        rotated = [predict(proxy.port, ELSEWHERE, f"203.0.113.{i}") for i in range(LIMIT + 2)]
        assert rotated == [200] * LIMIT + [429] * 2
        # Wrong passwords from ELSEWHERE, for a name that is not the operator's.
        wrong = [
            call(proxy.port, "GET", LOG, headers=basic("mallory", f"guess-{i}"), source=ELSEWHERE)
            for i in range(LIMIT + 1)
        ]
        # the LIMIT-th failure locks, and is answered so
        assert [status for status, _, _ in wrong] == [401] * (LIMIT - 1) + [429] * 2
        assert json.loads(wrong[-1][2])["error"]["code"] == "locked_out"

        # Another client, at 127.0.0.1, with the right password.
        mine = predict(proxy.port, "127.0.0.1", "203.0.113.1")
        status, _, body = call(
            proxy.port, "GET", LOG, headers=basic("operator", "the-right-one-42")
        )
        if num_proxies == "1":
            assert (mine, status) == (200, 200), body
        else:  # the control: both clients are the proxy's address to the service
            assert (mine, status) == (429, 429), body

        # /metrics: the scraper's address only, in the service's error shape otherwise.
        assert call(proxy.port, "GET", "/metrics")[0] == 200
        status, response, body = call(proxy.port, "GET", "/metrics", source=ELSEWHERE)
        assert status == 403
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(body)["error"]["code"] == "forbidden"
