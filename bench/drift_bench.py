"""What drift monitoring costs (issue 28), in one run:

    .venv/bin/python bench/drift_bench.py [--seconds 8] [--rounds 3] [--calls 20000]
        [--quiet-below CORES [--quiet-wait 30]]

(a) In process, on the Adult demo random forest registered with its training data as
    reference (``catalogue.demo.register``; a temporary SQLite database): the time of
    ``monitoring.window.record(algorithm, frame, outputs)`` for one record, the call the
    scoring pipeline makes for every scored batch, split into its parts (the current
    reference's lookup, ``apps.ml.drift.encode``, the append to the process's buffer),
    median and p99 of ``--calls`` calls over 200 records of ``adult.test`` in turn;
    beside it, with monitoring on and off in alternate calls (``--calls``/5 each), the
    whole in-process ``serving.predict.predict`` of one record (routing, checking, the
    model, the log's INSERT) and the whole request through Django's handler (its test
    client: middleware, the DRF view, the JSON answer; no socket, no gunicorn), with
    ``window.record`` timed again in place within those requests (a loop keeps its code
    and data in the processor's caches; a request's other work evicts them). Then the
    same parts for a 10,000-row batch (a CSV sampled from ``adult.test``, read as
    batch-predict reads it), in microseconds per row, beside the model call on those rows,
    and the whole batch-predict of that file through Django, on and off in turn. The
    budget of the issue: at most 50 us per request on the predict path.
(b) Over HTTP: ``POST /api/v1/income_classifier/predict`` under gunicorn with the
    production configuration (predict_bench's ``Server``: 2 workers of 4 threads, the
    compiled path on). Each of ``--rounds`` rounds starts a fresh pair of servers, up at
    once, on fresh copies of one SQLite database (migrated, the demo models registered):
    ``DRIFT_MONITORING=1`` and ``DRIFT_MONITORING=0``; each is warmed up (3 s of wrk, two
    small files). Then, at 1 and at 8 connections, ``--seconds`` of wrk a server in
    ``SLICES`` slices, the two servers' slices alternating A B B A ... (the machine drifts
    within seconds when others use it), the bodies 200 records of ``adult.test`` in turn
    (predict_bench's script), with the measured server's worker CPU per request; then
    three uploads each, in turn, of a 10,000-row CSV to ``/api/v1/batch-predict``. The
    medians of the rounds, each pair of slices' ratio, and on/off ratios: the target of
    the issue is within 5 %.

The machine may be shared: each measurement of (b) reports the cores busy outside this
benchmark's processes meanwhile ("other load", shadow_bench's ``OtherLoad``); with
``--quiet-below CORES`` each (and (a), twice) first waits (``--quiet-wait`` s at most)
until that load is below CORES.

Needs wrk (Debian: ``apt-get install wrk``) and curl. Prints a Markdown table headed by
the command, and saves it (``bench/out/drift_results.md``). Ratios within one run are what
to compare: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batch_bench import make_csv
from predict_bench import Server, lua_script, records, wrk
from shadow_bench import OtherLoad, cpu_seconds, wait_for_quiet

from common import ARTIFACTS, OUT, REPO, SERVER, log, save, server_env

sys.path[:0] = [str(SERVER), str(REPO / "research")]

ENDPOINT = "income_classifier"
VARIANTS = (("monitoring on", "1"), ("monitoring off", "0"))
CONNECTIONS = (1, 8)
BATCH_ROWS = 10_000
BUDGET_US = 50.0
WARM_UP_SECONDS = 3
UPLOADS = 3  # of the 10,000-row file, per server and round
SLICES = 4  # each --seconds of wrk in slices, the two servers' slices alternating
SETTLE_SECONDS = 1.2  # after a file in process: DRIFT_FLUSH_SECONDS and a margin


# -- (a) in process ---------------------------------------------------------------------


@dataclass
class Timings:
    """Microseconds per call of each part, in the order timed."""

    runs: dict[str, list[float]]

    def median(self, part: str) -> float:
        return statistics.median(self.runs[part])

    def p99(self, part: str) -> float:
        values = sorted(self.runs[part])
        return values[min(len(values) - 1, int(len(values) * 0.99))]


def private_artifacts(folder: Path) -> dict[str, str]:
    """A copy of the demo models' files in ``folder`` (not their compiled forms), and the
    settings of a server that serves them, whatever (a) put in this process's environment.
    The compiled forms beside the shared files are sealed with the key of whoever compiled
    them last: another checkout's server or benchmark on this machine seals them anew with
    its own, and a server of this run would then compile again amid a measurement."""
    artifacts = folder / "artifacts"
    artifacts.mkdir()
    for path in ARTIFACTS.iterdir():
        if path.suffix in (".joblib", ".skops", ".csv", ".json"):
            shutil.copy(path, artifacts / path.name)
    return {"ML_DEMO_MODELS": "1", "MODEL_ARTIFACTS_PATH": str(artifacts)}


def setup_django(folder: Path, served: dict[str, str]) -> Any:
    """Django on a fresh SQLite database with the demo forest registered (its reference
    profile built from its training data); the forest's catalogue row as predict sees it."""
    os.environ.update(server_env(f"sqlite:///{folder / 'bench.sqlite3'}"))
    os.environ.update(
        served,
        DJANGO_SETTINGS_MODULE="server.settings",
        ML_DEMO_MODELS="0",  # only the forest, registered below
        ML_COMPILED_INFERENCE="1",
        DRIFT_MONITORING="1",
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from apps.endpoints.catalogue import demo
    from apps.endpoints.serving import routing

    [forest] = [spec for spec in demo.DEMO_MODELS if spec.file == "random_forest.joblib"]
    if not demo.register(forest):
        raise RuntimeError(f"the demo forest did not register from {served}")
    arms = routing.for_request(endpoint_name=ENDPOINT, status="production", version=None)
    return arms.algorithms[0]


def timed(parts: dict[str, Callable[[], object]], calls: int) -> Timings:
    """Each part called ``calls`` times, the parts in turn (they see the same moments), in
    an order that turns round every other call (a part's work left behind, such as a
    commit's or a thread's, falls on each part alike). A part may use what another made
    at the previous call: the first call runs them in the given order."""
    runs: dict[str, list[float]] = {name: [] for name in parts}
    forward = list(parts.items())
    clock = time.perf_counter_ns
    for n in range(calls):
        for name, call in forward if n % 2 == 0 else forward[::-1]:
            started = clock()
            call()
            runs[name].append((clock() - started) / 1e3)
    return Timings(runs)


def one_record(algorithm: Any, calls: int) -> Timings:
    """``window.record`` of one record and its parts, and predict with monitoring on and
    off, over 200 records of adult.test in turn."""
    from django.conf import settings

    from apps.endpoints.monitoring import references, window
    from apps.endpoints.serving import predict
    from apps.ml import codecs, drift
    from apps.ml.registry import get_registry

    runtime = get_registry().get(algorithm)
    if runtime.engine != "onnx":
        log(f"warning: the forest answers with {runtime.engine}, not the compiled path")
    sample = records()
    scored = []
    for one in sample:  # each record checked and answered as the pipeline does
        frame = codecs.frame_from_records([one], runtime.signature)
        scored.append((frame, {"label": runtime.predict(frame).labels}))
    current = references.current(algorithm)
    assert current is not None, "the forest has no reference profile"
    buffer = window._buffer.get()
    state: dict[str, Any] = {"i": 0}

    def record() -> None:
        state["i"] = (state["i"] + 1) % len(scored)
        frame, outputs = scored[state["i"]]
        window.record(algorithm, frame, outputs)

    def lookup() -> None:
        references.current(algorithm)

    def encode() -> None:
        frame, outputs = scored[state["i"]]
        state["codes"] = drift.encode(current.profile, frame.columns, outputs, rows=frame.rows)

    def append() -> None:
        frame, outputs = scored[state["i"]]
        buffer.add(current.reference_id, current.profile, window._Part(frame.columns, outputs, 1))

    log(f"(a) window.record of one record and its parts, {calls:,} calls each")
    timings = timed({"record": record, "lookup": lookup, "encode": encode, "append": append}, calls)

    def predict_one(monitoring: bool) -> Callable[[], object]:
        def call() -> object:
            settings.DRIFT_MONITORING = monitoring
            state["i"] = (state["i"] + 1) % len(sample)
            return predict.predict(
                endpoint_name=ENDPOINT, records=[sample[state["i"]]], status="production"
            )

        return call

    whole = max(calls // 5, 200)
    log(f"(a) predict of one record, monitoring on and off in turn, {whole:,} calls each")
    for warm in range(200):  # the log's table, the compiled session, the caches
        predict_one(warm % 2 == 0)()
    try:
        both = {"predict, on": predict_one(True), "predict, off": predict_one(False)}
        timings.runs.update(timed(both, whole).runs)
    finally:
        settings.DRIFT_MONITORING = True
    return timings


def batch(algorithm: Any, repeat: int = 20) -> dict[str, float]:
    """Microseconds per row of ``window.record`` and its parts for a 10,000-row batch (as
    batch-predict reads a file), and of the model call on it; the median of ``repeat``."""
    import pandas as pd

    from apps.endpoints.monitoring import references, window
    from apps.ml import codecs, drift
    from apps.ml.registry import get_registry

    runtime = get_registry().get(algorithm)
    table = pd.read_csv(make_csv(BATCH_ROWS), dtype=str, keep_default_na=False)
    text = {name: table[name].tolist() for name in runtime.signature.names}
    frame = codecs.frame_from_text(text, runtime.signature)
    current = references.current(algorithm)
    assert current is not None
    buffer = window._buffer.get()
    outputs: dict[str, Any] = {}
    encoded: dict[str, Any] = {}

    def model() -> None:
        outputs["label"] = runtime.predict(frame).labels

    def encode() -> None:
        encoded["codes"] = drift.encode(current.profile, frame.columns, outputs, rows=frame.rows)

    def append() -> None:
        buffer.add(
            current.reference_id, current.profile, window._Part(frame.columns, outputs, frame.rows)
        )

    def record() -> None:
        window.record(algorithm, frame, outputs)

    log(f"(a) a {BATCH_ROWS:,}-row batch, {repeat} times")
    runs = timed({"model": model, "record": record, "encode": encode, "append": append}, repeat)
    return {name: runs.median(name) / BATCH_ROWS for name in runs.runs}


def through_django(calls: int, repeat: int = 6) -> tuple[Timings, Timings]:
    """The whole request through Django's handler (its test client: middleware, the DRF
    view, the answer; no socket, no gunicorn), monitoring on and off in turn: predict of one
    record (``calls`` of each), and batch-predict of the 10,000-row file (``repeat`` of
    each, us per row). A file leaves work behind (the log's last commits, the drift
    buffer's write): each is followed by ``SETTLE_SECONDS`` of quiet, so that the next
    starts on an idle process and the file's CPU time (this process's, every thread's)
    includes what it left."""
    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    from apps.endpoints.monitoring import window

    client = Client(SERVER_NAME="127.0.0.1")
    bodies = [json.dumps(r) for r in records()]
    data = make_csv(BATCH_ROWS).read_bytes()
    turn = {"i": 0}

    def predict(monitoring: bool) -> Callable[[], object]:
        def call() -> object:
            settings.DRIFT_MONITORING = monitoring
            turn["i"] = (turn["i"] + 1) % len(bodies)
            answer = client.post(
                f"/api/v1/{ENDPOINT}/predict", bodies[turn["i"]], content_type="application/json"
            )
            assert answer.status_code == 200, answer.content
            return answer

        return call

    def batch(monitoring: bool) -> tuple[float, float]:
        settings.DRIFT_MONITORING = monitoring
        started, cpu = time.perf_counter(), time.process_time()
        upload = SimpleUploadedFile("rows.csv", data, content_type="text/csv")
        answer = client.post(f"/api/v1/batch-predict?endpoint={ENDPOINT}", {"file": upload})
        assert answer.status_code == 200
        answer.getvalue()  # the whole answer, streamed or not
        elapsed = time.perf_counter() - started
        time.sleep(SETTLE_SECONDS)
        return elapsed * 1e6 / BATCH_ROWS, (time.process_time() - cpu) * 1e6 / BATCH_ROWS

    # window.record timed in place: within a request its code and data are no longer in
    # the caches a loop of it keeps warm.
    record, in_place = window.record, []

    def record_timed(algorithm: Any, frame: Any, outputs: dict[str, Any]) -> None:
        started = time.perf_counter_ns()
        record(algorithm, frame, outputs)
        if settings.DRIFT_MONITORING:
            in_place.append((time.perf_counter_ns() - started) / 1e3)

    log(f"(a) the whole request through Django, on and off in turn: predict x{calls:,}")
    files = Timings({"on": [], "off": [], "cpu on": [], "cpu off": []})
    try:
        for warm in range(200):
            predict(warm % 2 == 0)()
        window.record = record_timed
        predicted = timed({"on": predict(True), "off": predict(False)}, calls)
        window.record = record
        predicted.runs["record in place"] = in_place
        log(f"(a) the whole request through Django, on and off in turn: batch-predict x{repeat}")
        batch(True)
        for n in range(repeat):
            for name in ("on", "off") if n % 2 == 0 else ("off", "on"):
                elapsed, cpu = batch(name == "on")
                files.runs[name].append(elapsed)
                files.runs[f"cpu {name}"].append(cpu)
    finally:
        settings.DRIFT_MONITORING = True
        window.record = record
    return predicted, files


# -- (b) over HTTP ----------------------------------------------------------------------


def upload(url: str, path: Path) -> float:
    """Seconds to upload ``path`` to batch-predict and read the whole answer."""
    started = time.perf_counter()
    done = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-F", f"file=@{path}",
         f"{url}/api/v1/batch-predict?endpoint={ENDPOINT}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.stdout != "200":
        raise RuntimeError(f"batch-predict of {path.name} answered {done.stdout}")
    return elapsed


def template_database(folder: Path, served: dict[str, str]) -> Path:
    """A migrated SQLite database with the demo models registered (their references
    built once), copied for every server: each starts on a fresh, empty window."""
    path = folder / "template.sqlite3"
    env = dict(server_env(f"sqlite:///{path}"), **served, ML_COMPILED_INFERENCE="1")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=SERVER, env=env, check=True)
    return path


@dataclass
class Http:
    """(b)'s measurements, per (variant, connections) and per variant (batch-predict)."""

    predict: dict[tuple[str, int], list[dict[str, float]]] = field(default_factory=dict)
    batch: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    # per connections, on/off req/s of each pair of slices measured one after the other
    pairs: dict[int, list[float]] = field(default_factory=dict)


def _combined(slices: list[dict[str, float]]) -> dict[str, float]:
    """A round's slices of one server as one measurement: req/s and CPU over all of them,
    the medians of their p50 and p99, their mean other load."""
    requests = sum(r["requests"] for r in slices)
    return {
        "rps": requests / sum(r["requests"] / r["rps"] for r in slices),
        "p50": statistics.median(r["p50"] for r in slices),
        "p99": statistics.median(r["p99"] for r in slices),
        "cpu_us": sum(r["cpu_s"] for r in slices) / max(requests, 1) * 1e6,
        "other": statistics.mean(r["other"] for r in slices),
        "errors": sum(r["errors"] for r in slices),
        "requests": requests,
    }


def over_http(folder: Path, served: dict[str, str], args: Any) -> Http:
    """Each round a fresh pair of servers, on and off, up at once and idle but for the one
    measured: each measurement of one is right after the same of the other (the machine
    drifts over minutes), and each round has servers of its own (so does a server's luck:
    its workers' places, its database file)."""
    script = lua_script(records(), folder)
    template = template_database(folder, served)
    small, large = make_csv(1000), make_csv(BATCH_ROWS)
    http = Http()
    piece = max(1, args.seconds // SLICES)
    for round_ in range(args.rounds):
        order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
        with ExitStack() as stack:
            servers: dict[str, Server] = {}
            for name, value in order:
                database = folder / f"round{round_}-{value}.sqlite3"
                shutil.copy(template, database)
                env = {**served, "DRIFT_MONITORING": value}
                servers[name] = stack.enter_context(Server(f"sqlite:///{database}", True, env))
            for server in servers.values():
                wrk(server.url, script, 8, WARM_UP_SECONDS)  # each worker loads its model
                upload(server.url, small)
                upload(server.url, small)  # whichever worker answers has seen a file
            workers = {name: server.worker_pids() for name, server in servers.items()}
            own = [p for name, s in servers.items() for p in (s.process.pid, *workers[name])]
            names = list(servers)
            for connections in CONNECTIONS:
                log(f"(b) round {round_ + 1}, {connections} connection(s): {SLICES} x {piece} s")
                slices: dict[str, list[dict[str, float]]] = {name: [] for name in names}
                for k in range(SLICES):  # A B B A A B B A: a steady drift falls on both alike
                    for name in names if k % 2 == 0 else names[::-1]:
                        if args.quiet_below is not None:
                            wait_for_quiet(own, args.quiet_below, args.quiet_wait)
                        cpu, other = cpu_seconds(workers[name]), OtherLoad(own)
                        measured = wrk(servers[name].url, script, connections, piece)
                        measured["other"] = other.cores()
                        measured["cpu_s"] = cpu_seconds(workers[name]) - cpu
                        slices[name].append(measured)
                for name, done in slices.items():
                    http.predict.setdefault((name, connections), []).append(_combined(done))
                (on, _), (off, _) = VARIANTS
                http.pairs.setdefault(connections, []).extend(
                    a["rps"] / b["rps"] for a, b in zip(slices[on], slices[off], strict=True)
                )
            log(f"(b) round {round_ + 1}: batch-predict of {BATCH_ROWS:,} rows, {UPLOADS} each")
            uploads: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
            for _ in range(UPLOADS):
                for name, server in servers.items():
                    if args.quiet_below is not None:
                        wait_for_quiet(own, args.quiet_below, args.quiet_wait)
                    cpu, other = cpu_seconds(workers[name]), OtherLoad(own)
                    elapsed = upload(server.url, large)
                    uploads[name].append(
                        {
                            "rate": BATCH_ROWS / elapsed,
                            "cpu_s": cpu_seconds(workers[name]) - cpu,
                            "other": other.cores(),
                        }
                    )
        for name, done in uploads.items():
            # The fastest of the round's uploads: the least disturbed by other load.
            http.batch.setdefault(name, []).append(max(done, key=lambda u: u["rate"]))
    return http


# -- the table --------------------------------------------------------------------------


@dataclass
class Measured:
    """Everything one run measured."""

    one: Timings  # (a) window.record of one record, its parts, predict() on and off
    per_row: dict[str, float]  # (a) window.record of a 10,000-row batch and its parts
    django: Timings  # (a) the whole predict request through Django, on and off
    files: Timings  # (a) the whole batch-predict request through Django, on and off
    http: Http  # (b)


def _ratio(on: float, off: float, unit: str, digits: int = 1) -> str:
    return f"{on / off:.3f}x ({on - off:+,.{digits}f} {unit})"


def in_process_table(m: Measured, calls: int) -> list[str]:
    one, django, files, per_row = m.one, m.django, m.files, m.per_row
    labels = {
        "record": "`window.record`, one record, in a loop (all of it)",
        "lookup": "of which: the current reference (`references.current`)",
        "encode": "beside it, off the request path: `drift.encode` of one record alone (15 "
        "codes: 14 features and the label); the buffer codes a flush's records together",
        "append": "of which: the append of the batch's columns to the buffer",
    }
    in_place = django.median("record in place")
    verdict = "within" if in_place <= BUDGET_US else "OVER"
    lines = [
        f"(a) In process, the Adult forest (compiled), one record: {calls:,} calls of each part"
        f" in turn; predict and the request through Django {max(calls // 5, 200):,} calls"
        " each, monitoring on and off in turn",
        "",
        "| on the predict path | median us | p99 us |",
        "|---|---:|---:|",
        *[f"| {label} | {one.median(k):,.1f} | {one.p99(k):,.1f} |" for k, label in labels.items()],
        "| `window.record`, one record, timed in place within the requests through Django |"
        f" {in_place:,.1f} | {django.p99('record in place'):,.1f} |",
        *[
            f"| `serving.predict.predict`, one record, monitoring {k} |"
            f" {one.median('predict, ' + k):,.1f} | {one.p99('predict, ' + k):,.1f} |"
            for k in ("on", "off")
        ],
        *[
            f"| the whole request through Django (test client: middleware, DRF view, answer),"
            f" monitoring {k} | {django.median(k):,.1f} | {django.p99(k):,.1f} |"
            for k in ("on", "off")
        ],
        "",
        f"- `window.record` against the budget of {BUDGET_US:.0f} us a request: {verdict} in"
        f" place ({in_place:.1f} us, p99 {django.p99('record in place'):.1f} us); in a loop,"
        f" which keeps its code and data in the caches, {one.median('record'):.1f} us.",
        "- Monitoring on / off, medians: `serving.predict.predict` "
        + _ratio(one.median("predict, on"), one.median("predict, off"), "us")
        + "; the request through Django "
        + _ratio(django.median("on"), django.median("off"), "us")
        + ".",
        "",
        f"(a) In process, a {BATCH_ROWS:,}-row file (sampled from adult.test)",
        "",
        "| per row | us |",
        "|---|---:|",
        f"| `window.record` (all of it; median of 20) | {per_row['record']:.3f} |",
        f"| beside it, when the buffer is taken: `drift.encode` | {per_row['encode']:.3f} |",
        "| of which: the append (the buffer keeps a window's worth: the last 5,000 rows) |"
        f" {per_row['append']:.3f} |",
        f"| beside it: the model call (`runtime.predict`, compiled) | {per_row['model']:.3f} |",
        *[
            f"| the whole batch-predict through Django, monitoring {k}: time, median / best of"
            f" {len(files.runs[k])} | {files.median(k):.2f} / {min(files.runs[k]):.2f} |"
            for k in ("on", "off")
        ],
        *[
            f"| the whole batch-predict through Django, monitoring {k}: CPU (every thread's,"
            f" what the file left included), median / best | {files.median('cpu ' + k):.2f} /"
            f" {min(files.runs['cpu ' + k]):.2f} |"
            for k in ("on", "off")
        ],
        "",
        "- batch-predict through Django, on / off: time, median "
        + _ratio(files.median("on"), files.median("off"), "us a row", 2)
        + ", best "
        + _ratio(min(files.runs["on"]), min(files.runs["off"]), "us a row", 2)
        + "; CPU, median "
        + _ratio(files.median("cpu on"), files.median("cpu off"), "us a row", 2)
        + ", best "
        + _ratio(min(files.runs["cpu on"]), min(files.runs["cpu off"]), "us a row", 2)
        + ".",
    ]
    return lines


def http_table(http: Http, rounds: int, seconds: int) -> list[str]:
    def med(name: str, c: int, key: str) -> float:
        return statistics.median(r[key] for r in http.predict[(name, c)])

    def bmed(name: str, key: str) -> float:
        return statistics.median(u[key] for u in http.batch[name])

    lines = [
        "(b) Over HTTP: each round a fresh pair of servers up at once, `DRIFT_MONITORING=1` and"
        " `=0`, each gunicorn with 2 workers of 4 threads on its own SQLite database; per"
        f" connection count, {SLICES} slices of {max(1, seconds // SLICES)} s of wrk a server,"
        " the two servers' slices alternating (A B B A ...); a round's slices of a server"
        f" count as one measurement, and the table gives the medians of {rounds} rounds."
        " Worker CPU: the measured server's workers' user and system time per request (the"
        " flushing thread's included); other load: cores busy outside this benchmark"
        " meanwhile.",
        "",
        "| predict | connections | req/s | p50 ms | p99 ms | worker CPU us/request |"
        " other load, cores | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, _ in VARIANTS:
        for c in CONNECTIONS:
            errors = sum(r["errors"] for r in http.predict[(name, c)])
            lines.append(
                f"| {name} | {c} | {med(name, c, 'rps'):,.0f} | {med(name, c, 'p50'):.2f} |"
                f" {med(name, c, 'p99'):.2f} | {med(name, c, 'cpu_us'):,.0f} |"
                f" {med(name, c, 'other'):.2f} | {errors:.0f} |"
            )
    lines += [
        "",
        f"| batch-predict, {BATCH_ROWS:,} rows (the fastest of {UPLOADS} a round) | rows/s |"
        " worker CPU s | other load, cores | rows/s each round |",
        "|---|---:|---:|---:|---|",
    ]
    for name, _ in VARIANTS:
        each = ", ".join(f"{u['rate']:,.0f}" for u in http.batch[name])
        lines.append(
            f"| {name} | {bmed(name, 'rate'):,.0f} | {bmed(name, 'cpu_s'):.2f} |"
            f" {bmed(name, 'other'):.2f} | {each} |"
        )
    (on, _), (off, _) = VARIANTS
    lines += ["", "On / off (the target: within 5 %; in brackets, each round's own ratio):"]
    for c in CONNECTIONS:
        pairs = list(zip(http.predict[(on, c)], http.predict[(off, c)], strict=True))
        each = ", ".join(f"{a['rps'] / b['rps']:.2f}" for a, b in pairs)
        slices = sorted(http.pairs[c])
        lines.append(
            f"- predict, {c} connection(s): req/s {med(on, c, 'rps') / med(off, c, 'rps'):.3f}x"
            f" ({each}; of the {len(slices)} pairs of slices, the median"
            f" {statistics.median(slices):.3f}x, from {slices[0]:.2f} to {slices[-1]:.2f}),"
            f" p50 {med(on, c, 'p50') / med(off, c, 'p50'):.3f}x, worker CPU a request "
            + _ratio(med(on, c, "cpu_us"), med(off, c, "cpu_us"), "us", 0)
        )
    pairs = list(zip(http.batch[on], http.batch[off], strict=True))
    each = ", ".join(f"{a['rate'] / b['rate']:.2f}" for a, b in pairs)
    lines.append(
        f"- batch-predict, {BATCH_ROWS:,} rows: rows/s {bmed(on, 'rate') / bmed(off, 'rate'):.3f}x"
        f" ({each}), worker CPU {bmed(on, 'cpu_s') / bmed(off, 'cpu_s'):.3f}x"
    )
    return lines


def table(command: str, m: Measured, args: Any) -> str:
    return "\n".join(
        [
            f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load generator:"
            " wrk; SQLite, the compiled path)",
            "",
            *in_process_table(m, args.calls),
            "",
            *http_table(m.http, args.rounds, args.seconds),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20_000, help="(a): calls of each part")
    parser.add_argument(
        "--quiet-below",
        type=float,
        metavar="CORES",
        help="(b): before each measurement, wait until other users' load is below CORES",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=30, help="(b): seconds to wait for quiet, at most"
    )
    args = parser.parse_args()
    command = " ".join(["python bench/drift_bench.py", *map(shlex.quote, sys.argv[1:])])
    for tool in ("wrk", "curl"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: apt-get install {tool}", file=sys.stderr)
            return 2
    if not (ARTIFACTS / "adult_reference.csv").exists():
        print(f"No demo models in {ARTIFACTS}: run `make train` first.", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    try:
        served = private_artifacts(folder)
        algorithm = setup_django(folder, served)
        quiet = args.quiet_below is not None
        if quiet:
            wait_for_quiet([], args.quiet_below, args.quiet_wait)
        one = one_record(algorithm, args.calls)
        per_row = batch(algorithm)
        if quiet:
            wait_for_quiet([], args.quiet_below, args.quiet_wait)
        django, files = through_django(max(args.calls // 5, 200))
        http = over_http(folder, served, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    text = table(command, Measured(one, per_row, django, files, http), args)
    print("\n" + text)
    save("drift_results", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
