"""The production command end to end: gunicorn workers in other processes serve a model
version registered with ``manage.py register_model`` while they run, without a restart."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from prometheus_client.parser import text_string_to_metric_families
from sklearn.tree import DecisionTreeClassifier

from apps.ml.registry import MLRegistry
from apps.ml.tests.factories import SAMPLE_RECORD, train_tiny_artifact
from apps.ops.tests.live_server import Server, serving, upload_wine

# What an operator sends to read /readyz's checks and /metrics.
TOKEN = "live-operator-token"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def server(registry: MLRegistry, artifacts_dir: Path, tmp_path: Path) -> Iterator[Server]:
    with serving(artifacts_dir, tmp_path, METRICS_TOKEN=TOKEN) as running:
        yield running


@pytest.mark.django_db(transaction=True)
def test_a_running_server_serves_a_version_registered_with_the_command_without_restart(
    server: Server, tmp_path: Path
) -> None:
    status, _, body = server.call("POST", "/api/v1/income_classifier/predict", SAMPLE_RECORD)
    assert status == 404 and json.loads(body)["error"]["code"] == "endpoint_not_found"

    trained, _ = train_tiny_artifact(
        tmp_path / "handed_over",
        "tree.joblib",
        estimator=DecisionTreeClassifier(max_depth=4, random_state=0),
    )
    call_command(
        "register_model",
        str(trained),
        "--endpoint",
        "income_classifier",
        "--name",
        "decision tree",
        "--version",
        "2.0.0",
        "--status",
        "production",
    )

    answers = [
        server.call(
            "POST",
            "/api/v1/income_classifier/predict",
            SAMPLE_RECORD,
            headers={"X-Request-ID": f"live-{i}"},
        )
        for i in range(6)  # two workers: both get some of them
    ]
    for status, _headers, body in answers:
        assert status == 200, body
        assert json.loads(body)["algorithm"]["name"] == "decision tree"
    assert [h["X-Request-ID"] for _, h, _ in answers] == [f"live-{i}" for i in range(6)]

    status, _, body = server.call("GET", "/readyz", headers=OPERATOR)
    assert status == 200, body
    [card] = json.loads(body)["algorithms"]
    assert card["name"] == "decision tree" and card["ok"]

    status, _, body = server.call("GET", "/metrics", headers=OPERATOR)
    counted = {
        s.labels["algorithm"]: s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == "ml_predictions_total"
    }
    assert counted == {"decision tree": 6}  # added up over both workers

    status, _, body = server.call("GET", "/static/admin/css/base.css")
    assert status == 200  # collected and served by whitenoise

    lines = server.log.read_text().splitlines()
    assert any(
        "[live-3] server.access" in line and '"POST /api/v1/income_classifier/predict" 200' in line
        for line in lines
    )


@pytest.mark.django_db(transaction=True)
def test_a_model_uploaded_over_http_serves_from_every_worker_without_restart(
    server: Server,
) -> None:
    from rest_framework.authtoken.models import Token

    from apps.endpoints.tests.factories import operator
    from apps.ml.tests import models

    token = Token.objects.create(user=operator()).key
    model, card = upload_wine(server, token)
    assert card["task"] == "classification" and card["classes"] == sorted(set(model.classes_))

    x, _ = models.wine()
    record = x.iloc[40].to_dict()
    answers = [server.call("POST", "/api/v1/wine/predict", record) for _ in range(6)]
    for status, _headers, text in answers:
        assert status == 200, text
        assert json.loads(text)["label"] == model.predict(x.iloc[[40]])[0]
    # Both workers hold the new version. Which worker takes a connection is the kernel's
    # choice, and on a busy machine one of them can take a dozen calls in a row: ask
    # /readyz (which loads every version it lists) in concurrent bursts until both answered.
    seen: dict[int, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + 30
    with ThreadPoolExecutor(4) as pool:
        while len(seen) < 2 and time.monotonic() < deadline:
            for status, _headers, text in pool.map(
                lambda _: server.call("GET", "/readyz", headers=OPERATOR), range(8)
            ):
                assert status == 200, text
                ready = json.loads(text)
                seen[ready["pid"]] = ready["algorithms"]
    assert len(seen) == 2, f"only worker {set(seen)} answered in 30 s"
    for algorithms in seen.values():
        assert any(a["name"] == "lr" and a["ok"] for a in algorithms), algorithms


@pytest.mark.django_db(transaction=True)
def test_a_keep_alive_connection_is_closed_after_keepalive_requests_answers(
    registry: MLRegistry, artifacts_dir: Path, tmp_path: Path
) -> None:
    """A connection is not a worker's for its life: the KEEPALIVE_REQUESTS-th answer on it
    says Connection: close and the server closes it, so the client's next connection may
    go to the other worker (bench/workers_bench.py measures the split)."""
    import http.client

    with serving(artifacts_dir, tmp_path, KEEPALIVE_REQUESTS="3") as running:
        client = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
        ports, closing = [], []
        for _ in range(7):
            client.request("GET", "/healthz")
            answer = client.getresponse()
            answer.read()
            assert answer.status == 200
            ports.append(client.sock.getsockname()[1] if client.sock else None)
            closing.append(answer.getheader("Connection", "").lower() == "close")
        client.close()
    assert closing == [False, False, True, False, False, True, False]
    # The third answer closed the connection: the fourth request came on a new one.
    assert ports[3] is not None and ports[3] != ports[0]
    assert ports[0] == ports[1] and ports[3] == ports[4]
