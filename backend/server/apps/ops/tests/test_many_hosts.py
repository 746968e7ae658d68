"""Two app hosts on one machine, behind the shipped nginx balancing over both: each host
has its own artifacts folder (its local cache), and they share the database and the
model storage (MODEL_STORAGE_PATH), as hosts of one deployment do (docs/deployment.md)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from apps.ops.tests.live_server import free_port, multipart, serving, upload_wine
from apps.ops.tests.test_slow_clients import call, nginx_or_skip, proxying

PREDICT = "/api/v1/wine/predict"


@pytest.mark.django_db(transaction=True)
def test_a_model_registered_on_one_host_serves_from_both_and_the_balancer_outlives_a_host(
    tmp_path: Path,
) -> None:
    from rest_framework.authtoken.models import Token

    from apps.endpoints.tests.factories import operator
    from apps.ml.tests import models

    nginx_or_skip()  # before anything starts: a skip should cost nothing
    token = Token.objects.create(user=operator()).key
    store = tmp_path / "shared-models"
    shared = {"MODEL_STORAGE_PATH": str(store), "PREDICT_CACHE_SECONDS": "1"}
    x, _ = models.wine()
    record = json.dumps(x.iloc[40].to_dict()).encode()
    headers = {"Content-Type": "application/json"}

    def predict(port: int) -> tuple[int, bytes]:
        status, _, answer = call(port, "POST", PREDICT, record, headers, timeout=30)
        return status, answer

    folders = {name: tmp_path / name for name in ("a", "b", "a-again")}
    for folder in folders.values():
        (folder / "models").mkdir(parents=True)
    port_a = free_port()
    with (
        serving(folders["b"] / "models", folders["b"], **shared) as b,
        serving(folders["a"] / "models", folders["a"], PORT=str(port_a), **shared) as a,
        proxying([a.port, b.port], tmp_path) as balancer,
    ):
        model, card = upload_wine(a, token)
        sha256 = card["artifact_sha256"]
        expected = str(model.predict(x.iloc[[40]])[0])
        # Host B never saw the upload: it fetches the file from the shared storage.
        status, answer = predict(b.port)
        assert status == 200 and json.loads(answer)["label"] == expected, answer
        assert (folders["b"] / "models" / "uploads" / f"{sha256}.skops").is_file()
        for _ in range(6):
            status, through = predict(balancer.port)
            assert status == 200 and json.loads(through)["label"] == expected, through

        # Drift: the reference added on host A; the 7 records scored by either host's
        # workers reach one window in the shared database, which both hosts report.
        reference, content_type = multipart(
            {}, "reference", "wine.csv", x.to_csv(index=False).encode(), "text/csv"
        )
        status, _, added = a.call_raw(
            "POST",
            f"/api/v1/mlalgorithms/{card['id']}/reference",
            reference,
            {"Content-Type": content_type, "Authorization": f"Token {token}"},
        )
        assert status == 201, added
        time.sleep(1.2)  # every worker's selection of the version, with its reference's id,
        # is remembered PREDICT_CACHE_SECONDS (1 s here)
        for port in (a.port, b.port, a.port, a.port, b.port, b.port, a.port):
            assert predict(port)[0] == 200
        time.sleep(2.5)  # each worker writes its records every DRIFT_FLUSH_SECONDS (1 s)
        for host in (a, b):
            status, _, drift = call(host.port, "GET", "/api/v1/wine/drift", timeout=30)
            assert status == 200, drift
            [version] = json.loads(drift)["versions"]
            assert version["window"]["records"] == 7, version["window"]

        # Host A dies, with no request in flight: the balancer answers every request from B.
        # (A request nginx sends down a kept-alive connection at the instant the host dies
        # is in flight too: nginx answers it 502 rather than send a POST twice, which could
        # log a prediction twice. Half a second lets nginx see the closed connections.)
        os.killpg(a.process.pid, signal.SIGKILL)
        a.process.wait(timeout=10)
        time.sleep(0.5)
        answers = [predict(balancer.port) for _ in range(30)]
        assert [status for status, _ in answers] == [200] * 30, answers

        # Host A again, on its port, with an empty cache: it fetches and serves, and the
        # balancer sends it requests again once its 10 s pause is over.
        with serving(folders["a-again"] / "models", folders["a-again"], PORT=str(port_a), **shared):
            status, answer = predict(port_a)
            assert status == 200 and json.loads(answer)["label"] == expected, answer
            assert (folders["a-again"] / "models" / "uploads" / f"{sha256}.skops").is_file()
            status, _, _ = call(port_a, "GET", "/readyz", timeout=30)
            assert status == 200
    logged = [line for line in balancer.access_log().splitlines() if PREDICT in line]
    assert len(logged) == 6 + 30 and all('" 200 ' in line for line in logged), logged
