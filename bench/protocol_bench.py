"""The Open Inference Protocol (V2) against our own routes, on the same server (issue 29).

    .venv/bin/python bench/protocol_bench.py [--rounds 3] [--seconds 8] [--batch-requests 5]
        [--no-perf-analyzer] [--no-profile]

One gunicorn server in the production configuration (``predict_bench.Server``: 2 workers
of 4 threads, SQLite, the compiled path on), the random forest of ``income_classifier``:

  1. one row: ``POST /v2/models/income_classifier/infer`` (14 named tensors of shape [1])
     against ``POST /api/v1/income_classifier/predict`` (the same record as a JSON object),
     the same 200 records of ``adult.test`` in turn, driven by wrk at 1 and 8 connections,
     alternating the routes over ``--rounds`` rounds of ``--seconds`` each: req/s, p50,
     p99 and the workers' CPU per request, the median of the rounds, and V2/ours;
  2. 10,000 rows: one infer with tensors of shape [10000] against one
     ``POST /api/v1/batch-predict`` of the same rows as CSV, after a warm-up request of
     each, then ``--batch-requests`` of each alternating, time to the answer's last byte
     (bodies encoded beforehand): the median rows/s of each and V2/ours;
  3. Triton's perf_analyzer, as a compatibility check: it reads the model's metadata and
     Triton's model configuration from us, then sends JSON tensors of real records
     (``--input-tensor-format json``) at concurrency 1 and 8 (``perf_analyzer_binary``
     says where it comes from);
  4. in process, one 10,000-row request of each kind through Django's test client on a
     temporary SQLite database: the wall time of each stage (a wrapper around each
     stage's function; batch-predict's model call and log writes run on threads of their
     own, overlapping the request's thread).

Before each measured phase it waits (up to 15 minutes) while another benchmark runs
(``BUSY``): a concurrent benchmark on two cores ruins even the ratios within one run.
Tables, with this command on top, are printed and saved to ``bench/out/protocol_bench.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import importlib
import inspect
import io
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predict_bench import PATH as PREDICT_PATH
from predict_bench import Server, lua_script, records, wrk

from common import ARTIFACTS, OUT, REPO, cpu_of, log, save, server_env, stop

MODEL = "income_classifier"
V2_PATH = f"/v2/models/{MODEL}/infer"
BATCH_PATH = "/api/v1/batch-predict"
BUSY = "drift_bench|drift_replay|protocol_bench"
PERF_VENV = OUT / "venvs" / "perf"


# -- the bodies ----------------------------------------------------------------------------


def adult_frame(n: int) -> Any:
    """The first ``n`` rows of ``adult.test``, features only (missing values as NaN)."""
    from adult import load_split, schema

    return load_split("adult.test").head(n)[list(schema.FEATURES)]


def v2_body(columns: dict[str, list[Any]], datatypes: dict[str, str]) -> dict[str, Any]:
    """An infer request of one tensor per feature, of ``datatypes`` (the model's metadata)."""
    n = len(next(iter(columns.values())))
    return {
        "inputs": [
            {"name": name, "shape": [n], "datatype": datatypes[name], "data": values}
            for name, values in columns.items()
        ]
    }


def input_types(metadata: dict[str, Any]) -> dict[str, str]:
    """Each input's datatype, from the model's V2 metadata."""
    return {tensor["name"]: tensor["datatype"] for tensor in metadata["inputs"]}


def json_columns(frame: Any) -> dict[str, list[Any]]:
    """Each column's values as JSON has them (a missing value is null)."""
    return {name: json.loads(frame[name].to_json(orient="values")) for name in frame.columns}


def columns_of(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {name: [row[name] for row in rows] for name in rows[0]}


def multipart(csv_bytes: bytes, fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body with the file as field ``file``; and its content type."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="rows.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n".encode()
        + csv_bytes
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


def post(url: str, body: bytes, content_type: str) -> tuple[float, bytes]:
    """Seconds from sending ``body`` to the answer's last byte; and the answer."""
    request = urllib.request.Request(url, body, {"Content-Type": content_type})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as answer:
        content = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{url}: {answer.status} {content[:300]!r}")
    return time.perf_counter() - started, content


# -- waiting for the machine -----------------------------------------------------------------


def _ancestors() -> set[int]:
    """This process and those it runs under (a shell whose command line names this file)."""
    found, pid = set(), os.getpid()
    while pid > 1:
        found.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            break
    return found


def others_running() -> list[str]:
    """Command lines of the other benchmarks running (``BUSY``), not this one."""
    found = subprocess.run(["pgrep", "-af", BUSY], capture_output=True, text=True).stdout
    mine = _ancestors()
    return [line for line in found.splitlines() if int(line.split()[0]) not in mine]


@dataclass
class Machine:
    """Whether the machine was free for each measured phase (``wait``), and its load."""

    notes: list[str] = field(default_factory=list)

    def wait(self, phase: str, *, poll: float = 30, limit: float = 15 * 60) -> None:
        started = time.monotonic()
        while others := others_running():
            if time.monotonic() - started > limit:
                self.notes.append(
                    f"{phase}: ran beside another benchmark after waiting 15 min"
                    f" ({others[0][:120]}): its numbers are not to be trusted"
                )
                log(self.notes[-1])
                return
            log(f"{phase}: another benchmark runs ({others[0][:100]}); waiting {poll:.0f} s")
            time.sleep(poll)
        self.notes.append(f"{phase}: load average {os.getloadavg()[0]:.2f} at its start")


# -- 1: one row, wrk -------------------------------------------------------------------------


def one_row(
    server: Server, folder: Path, rounds: int, seconds: int, machine: Machine
) -> dict[tuple[str, int], list[dict[str, float]]]:
    """Both routes at 1 and 8 connections, alternating within each round and which goes
    first from round to round."""
    rows = records()
    datatypes = input_types(get_json(server.url + f"/v2/models/{MODEL}"))
    v2_bodies = [v2_body(columns_of([r]), datatypes) for r in rows]
    for body in (*rows, *v2_bodies):  # lua_script writes each body as a [[long string]]
        assert "]]" not in json.dumps(body), "a body would end the lua long string early"
    scripts = {
        "ours": (lua_script(rows, folder, "predict.lua"), PREDICT_PATH),
        "V2": (lua_script(v2_bodies, folder, "v2.lua"), V2_PATH),
    }
    for script, path in scripts.values():  # steady state: every worker has its model
        # (a worker's first request waits for its model to load: wrk may time it out)
        wrk(server.url, script, 8, 3, path=path)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    machine.wait("1. one row")
    for round_ in range(rounds):
        order = list(scripts) if round_ % 2 == 0 else list(scripts)[::-1]
        for connections in (1, 8):
            for name in order:
                script, path = scripts[name]
                log(f"round {round_ + 1}: {name}, {connections} connection(s), {seconds} s")
                workers = server.worker_pids()
                before = sum(cpu_of(pid) or 0.0 for pid in workers)
                r = wrk(server.url, script, connections, seconds, path=path)
                used = sum(cpu_of(pid) or 0.0 for pid in workers) - before
                r["cpu_ms"] = used / max(r["requests"], 1) * 1e3
                results.setdefault((name, connections), []).append(r)
    return results


def one_row_table(results: dict[tuple[str, int], list[dict[str, float]]], rounds: int) -> str:
    def med(name: str, c: int, key: str) -> float:
        return statistics.median(r[key] for r in results[(name, c)])

    rows = [
        f"| {name} | {c} | {med(name, c, 'rps'):,.0f} | {med(name, c, 'p50'):.2f} |"
        f" {med(name, c, 'p99'):.2f} | {med(name, c, 'cpu_ms'):.2f} |"
        f" {sum(r['errors'] for r in results[(name, c)]):.0f} |"
        for c in (1, 8)
        for name in ("ours", "V2")
    ]
    ratios = []
    for c in (1, 8):
        rps = med("V2", c, "rps") / med("ours", c, "rps")
        p50 = med("V2", c, "p50") / med("ours", c, "p50")
        cpu = med("V2", c, "cpu_ms") / med("ours", c, "cpu_ms")
        met = "met" if rps >= 0.91 or p50 <= 1.10 else "NOT met"
        per_round = ", ".join(
            f"{v['rps'] / o['rps']:.3f}"
            for v, o in zip(results[("V2", c)], results[("ours", c)], strict=True)
        )
        ratios.append(
            f"- {c} connection(s): V2/ours req/s **{rps:.3f}** (rounds: {per_round}),"
            f" p50 **{p50:.3f}**, worker CPU per request {cpu:.3f};"
            f" target (req/s >= 0.91 or p50 <= 1.10) {met}"
        )
    return "\n".join(
        [
            f"**1. One row** (median of {rounds} alternating rounds; ours = `POST {PREDICT_PATH}`"
            f" with a JSON record, V2 = `POST {V2_PATH}` with 14 tensors of shape [1]; the same"
            " 200 records of adult.test in turn)",
            "",
            "| route | connections | req/s | p50 ms | p99 ms | worker CPU ms/request | errors |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            *ratios,
        ]
    )


# -- 2: 10,000 rows --------------------------------------------------------------------------


def many_rows(server: Server, rows: int, repeat: int, machine: Machine) -> dict[str, list[float]]:
    """Seconds per request of a ``rows``-row V2 infer and batch-predict, alternating."""
    frame = adult_frame(rows)
    datatypes = input_types(get_json(server.url + f"/v2/models/{MODEL}"))
    v2 = json.dumps(v2_body(json_columns(frame), datatypes)).encode()
    upload, content_type = multipart(frame.to_csv(index=False).encode(), {"endpoint": MODEL})
    calls: dict[str, Callable[[], tuple[float, bytes]]] = {
        "V2": lambda: post(server.url + V2_PATH, v2, "application/json"),
        "batch-predict": lambda: post(server.url + BATCH_PATH, upload, content_type),
    }
    log(f"2. {rows:,} rows: V2 body {len(v2) / 1e6:.2f} MB, CSV upload {len(upload) / 1e6:.2f} MB")
    # Warm-up, once each, and a check that both answer the same labels for the same rows.
    _, v2_answer = calls["V2"]()
    _, batch_answer = calls["batch-predict"]()
    [labels] = [o["data"] for o in json.loads(v2_answer)["outputs"] if o["name"] == "label"]
    theirs = [p["label"] for p in json.loads(batch_answer)["predictions"]]
    if labels != theirs or len(labels) != rows:
        raise RuntimeError("the V2 answer and batch-predict's differ for the same rows")
    times: dict[str, list[float]] = {name: [] for name in calls}
    machine.wait(f"2. {rows:,} rows")
    for i in range(repeat):
        for name in list(calls) if i % 2 == 0 else list(calls)[::-1]:
            seconds, _ = calls[name]()
            times[name].append(seconds)
            log(f"2. {name}: {rows / seconds:,.0f} rows/s")
    return times


def many_rows_table(times: dict[str, list[float]], rows: int) -> str:
    rate = {name: rows / statistics.median(t) for name, t in times.items()}
    lines = [
        f"| {name} | {rate[name]:,.0f} | {statistics.median(t) * 1e3:,.0f} |"
        f" {min(t) * 1e3:,.0f}-{max(t) * 1e3:,.0f} |"
        for name, t in times.items()
    ]
    ratio = rate["V2"] / rate["batch-predict"]
    met = "met" if ratio >= 0.8 else "NOT met"
    return "\n".join(
        [
            f"**2. {rows:,} rows in one request** (the first {rows:,} rows of adult.test; median"
            f" of {len(times['V2'])} requests each, alternating, after a warm-up of each; time"
            " to the answer's last byte)",
            "",
            "| request | rows/s | median ms | range ms |",
            "|---|---:|---:|---:|",
            *lines,
            "",
            f"- V2/batch-predict rows/s: **{ratio:.3f}**; target (within 20 %, >= 0.80) {met}",
        ]
    )


# -- 3: perf_analyzer ------------------------------------------------------------------------


def perf_analyzer_binary() -> tuple[Path | None, dict[str, str], str]:
    """Triton's perf_analyzer in a venv of the bench's own (``PERF_VENV``, git-ignored), made
    on first use; the environment to run it in; and where it came from (or why it is not
    there).

    The ``perf-analyzer`` package (2.58 and later) ships only wheels for glibc 2.38
    (``manylinux_2_38``); on an older glibc (Debian 12 has 2.36) pip falls back to its 0.1.0
    placeholder, which has no binary. Before 2.58 the binary came inside ``tritonclient``'s
    wheel; 2.50.0's runs on glibc 2.34, given libb64 (Debian: ``libb64-0d``) and the CUDA
    runtime's shared library (``nvidia-cuda-runtime-cu12``; no GPU is needed)."""
    glibc = tuple(int(p) for p in platform.libc_ver()[1].split(".")[:2] if p.isdigit())
    modern = glibc >= (2, 38)
    packages = (
        ["perf-analyzer"] if modern else ["tritonclient[http]==2.50.0", "nvidia-cuda-runtime-cu12"]
    )
    binary = PERF_VENV / "bin" / "perf_analyzer"
    if not binary.exists():
        log(f"3. installing {' '.join(packages)} into {PERF_VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(PERF_VENV)], check=True)
        done = subprocess.run(
            [str(PERF_VENV / "bin" / "pip"), "install", "-q", *packages],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not binary.exists():
            return None, {}, f"pip install {' '.join(packages)} failed: {done.stderr[-500:]}"
    env = dict(os.environ)
    cudart = sorted(PERF_VENV.glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"))
    if cudart:
        env["LD_LIBRARY_PATH"] = ":".join([str(cudart[0]), env.get("LD_LIBRARY_PATH", "")])
    check = subprocess.run([str(binary), "--version"], capture_output=True, text=True, env=env)
    if "Perf Analyzer" not in check.stdout + check.stderr:  # e.g. a library missing
        hint = " (Debian: apt-get install libb64-0d)" if "libb64" in check.stderr else ""
        return None, {}, f"{binary} does not start: {check.stderr.strip()[:300]}{hint}"
    source = (
        "perf-analyzer" if modern else "tritonclient 2.50.0's wheel (glibc here is older than 2.38)"
    )
    return binary, env, source


def perf_input_data(folder: Path, n: int = 200) -> Path:
    """Real records in perf_analyzer's ``--input-data`` format: one entry per request, each
    input's ``content`` and ``shape`` (our dims are [-1]). Records with a missing value are
    left out: perf_analyzer's JSON data cannot hold a null."""
    frame = adult_frame(n * 2).dropna().head(n)
    entries = [
        {
            name: {"content": [value if isinstance(value, str) else float(value)], "shape": [1]}
            for name, value in record.items()
        }
        for record in frame.to_dict(orient="records")
    ]
    path = folder / "perf_input.json"
    path.write_text(json.dumps({"data": entries}))
    return path


def perf_analyzer(
    server: Server, folder: Path, machine: Machine, requests: int = 2000
) -> tuple[str, str]:
    """perf_analyzer at concurrency 1, then 8, against our V2 route, ``requests`` requests
    each: its command and its table (or its error output, and what it sent)."""
    binary, env, source = perf_analyzer_binary()
    if binary is None:
        return "", f"**3. Triton's perf_analyzer** did not run: {source}"
    data = perf_input_data(folder)
    command = [
        "-m", MODEL,
        "-u", server.url.removeprefix("http://"),
        "-i", "http",
        "--input-data", str(data),
        "--input-tensor-format", "json",
        "--output-tensor-format", "json",
        # A fixed number of requests per level, rather than windows until three agree
        # within a percentage: on a shared two-core machine they may never agree. (A
        # request count takes one concurrency per run.)
        "--request-count", str(requests),
        "--percentile", "50",
    ]  # fmt: skip
    shown = "perf_analyzer " + shlex.join(
        [*(a.replace(str(data), "perf_input.json") for a in command), "-f", "perf.csv"]
    )
    shown += " --concurrency-range {1,8}"
    machine.wait("3. perf_analyzer")
    measured: list[dict[str, str]] = []
    for concurrency in (1, 8):
        log(f"3. perf_analyzer, concurrency {concurrency}, {requests} requests")
        report = folder / f"perf{concurrency}.csv"
        done = subprocess.run(
            [str(binary), *command, "--concurrency-range", str(concurrency), "-f", str(report)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        if done.returncode != 0 or not report.exists():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-6:])
            why = (
                "\n\nIts HTTP client (Triton's C++ client) sends `Inference-Header-Content-Length`"
                " with every infer, equal to `Content-Length` when the tensors are JSON (no"
                " binary part follows); our V2 view refuses any request with that header."
                if "Binary tensors" in tail
                else ""
            )
            return shown, (
                f"**3. Triton's perf_analyzer** (from {source}) read our model metadata and"
                f" configuration, then failed at concurrency {concurrency}"
                f" (exit {done.returncode}):\n\n```\n{tail}\n```{why}"
            )
        with report.open() as f:
            measured.extend(csv.DictReader(f))
    lines = [
        f"| {int(row['Concurrency'])} | {float(row['Inferences/Second']):,.0f} |"
        f" {float(row['p50 latency']) / 1e3:.2f} | {float(row['p99 latency']) / 1e3:.2f} |"
        for row in measured
    ]
    return shown, "\n".join(
        [
            f"**3. Triton's perf_analyzer** (from {source}; JSON tensors in and out; {requests}"
            " requests per concurrency of 200 complete records of adult.test in turn)",
            "",
            "| concurrency | infer/s | p50 ms | p99 ms |",
            "|---:|---:|---:|---:|",
            *lines,
        ]
    )


# -- 4: where a 10,000-row request's time goes, in process -------------------------------------

# (module, attribute, stage): each function is wrapped and its wall time added to its stage,
# by the thread it ran on. Stages nest: "checks + encode" includes the frame it builds.
STAGES = [
    ("apps.endpoints.api.parsers", "JSONParser.parse", "JSON parse"),
    ("rest_framework.parsers", "MultiPartParser.parse", "multipart parse (the upload)"),
    ("apps.endpoints.api.oip", "parse_infer", "V2 request checks (parse_infer)"),
    ("apps.endpoints.views.oip", "check_endpoint", "endpoint check (a query)"),
    ("apps.endpoints.serving.routing", "for_request", "routing (queries)"),
    ("apps.endpoints.serving.routing", "for_file", "routing (queries)"),
    ("apps.endpoints.batch.reading", "CsvFile.open", "CSV header and field counts"),
    ("apps.endpoints.batch.reading", "CsvFile.batches", "CSV chunks read"),
    ("apps.ml.codecs", "frame_from_columns", "frame_from_columns"),
    ("apps.ml.codecs", "frame_from_text", "frame_from_text"),
    ("apps.endpoints.serving.pipeline", "encode", "checks + encode (incl. the frame)"),
    ("apps.endpoints.serving.pipeline", "predict", "model call"),
    ("apps.endpoints.serving.pipeline", "monitor", "drift window"),
    ("apps.endpoints.serving.pipeline", "LogWriter.rows", "log rows built (JSON texts)"),
    ("apps.endpoints.serving.pipeline", "Batch.inputs", "... each row's input as JSON"),
    ("apps.ml.answer", "Answer.texts", "... each row's answer as JSON"),
    ("apps.endpoints.serving.bulk", "write_rows", "log INSERT"),
    ("apps.endpoints.serving.feedback", "tokens_for", "feedback tokens"),
    ("apps.endpoints.shadows.copying", "offer", "shadow offer"),
    ("apps.endpoints.api.oip", "infer_response", "answer building (infer_response)"),
    ("rest_framework.renderers", "JSONRenderer.render", "rendering (JSONRenderer)"),
]


class Stages:
    """Wall time per stage and thread ("request" or "other threads"), while installed."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = {}
        self._undo: list[Callable[[], None]] = []
        self._main = threading.get_ident()

    def install(self) -> None:
        for module_name, attribute, stage in STAGES:
            owner: Any = importlib.import_module(module_name)
            *path, name = attribute.split(".")
            for part in path:
                owner = getattr(owner, part)
            if name not in vars(owner):
                raise RuntimeError(f"{module_name}.{attribute} is not defined there: a stage moved")
            original = vars(owner)[name]
            if isinstance(original, classmethod | staticmethod):
                timed: Any = type(original)(self._timed(original.__func__, stage))
            else:
                timed = self._timed(original, stage)
            setattr(owner, name, timed)
            self._undo.append(functools.partial(setattr, owner, name, original))

    def uninstall(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo = []

    def add(self, stage: str, seconds: float, thread: str | None = None) -> None:
        if thread is None:
            thread = "request" if threading.get_ident() == self._main else "other threads"
        key = (stage, thread)
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds

    def _timed(self, function: Callable[..., Any], stage: str) -> Callable[..., Any]:
        if inspect.isgeneratorfunction(function):  # the time of each step, not of the call

            @functools.wraps(function)
            def steps(*args: Any, **kwargs: Any) -> Iterator[Any]:
                generator = function(*args, **kwargs)
                while True:
                    started = time.perf_counter()
                    try:
                        item = next(generator)
                    except StopIteration:
                        return
                    finally:
                        self.add(stage, time.perf_counter() - started)
                    yield item

            return steps

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - started)

        return timed


def in_process(
    rows: int, repeat: int, folder: Path
) -> dict[str, list[dict[tuple[str, str], float]]]:
    """Stage times of ``repeat`` requests of each kind (after a warm-up of each), through
    Django's test client on a fresh SQLite database with the demo models."""
    os.environ.update(
        server_env(f"sqlite:///{folder / 'profile.sqlite3'}"),
        DJANGO_SETTINGS_MODULE="server.settings",
        ML_COMPILED_INFERENCE="1",
        OMP_NUM_THREADS="1",
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0)
    client = Client(HTTP_HOST="127.0.0.1")
    frame = adult_frame(rows)
    datatypes = input_types(client.get(f"/v2/models/{MODEL}").json())
    v2 = json.dumps(v2_body(json_columns(frame), datatypes))
    csv_bytes = frame.to_csv(index=False).encode()

    def v2_request() -> None:
        answer = client.post(V2_PATH, v2, content_type="application/json")
        assert answer.status_code == 200, answer.content[:300]

    def batch_request(stages: Stages) -> None:
        upload = io.BytesIO(csv_bytes)
        upload.name = "rows.csv"
        answer = client.post(BATCH_PATH, {"file": upload, "endpoint": MODEL})
        assert answer.status_code == 200, answer.content[:300]
        started = time.perf_counter()
        b"".join(answer.streaming_content)  # type: ignore[attr-defined]
        stages.add("answer building + rendering (json_stream)", time.perf_counter() - started)

    results: dict[str, list[dict[tuple[str, str], float]]] = {"V2": [], "batch-predict": []}
    for i in range(repeat + 1):
        for name in ("V2", "batch-predict") if i % 2 == 0 else ("batch-predict", "V2"):
            stages = Stages()
            stages.install()
            try:
                started = time.perf_counter()
                v2_request() if name == "V2" else batch_request(stages)
                stages.add("whole request", time.perf_counter() - started, "request")
            finally:
                stages.uninstall()
            if i > 0:  # the first of each is the warm-up (loads the model)
                results[name].append(stages.seconds)
    return results


def profile_table(results: dict[str, list[dict[tuple[str, str], float]]], rows: int) -> str:
    keys: list[tuple[str, str]] = []
    for runs in results.values():
        for run in runs:
            keys.extend(k for k in run if k not in keys)
    order = {stage: i for i, (_, _, stage) in enumerate(STAGES)}
    keys.sort(key=lambda k: (k[0] == "whole request", order.get(k[0], len(order)), k[1]))

    def cell(name: str, key: tuple[str, str]) -> str:
        runs = results[name]
        values = [run.get(key, 0.0) for run in runs]
        return f"{statistics.median(values) * 1e3:,.1f}" if any(values) else ""

    lines = [
        f"| {stage} | {thread} | {cell('V2', (stage, thread))} |"
        f" {cell('batch-predict', (stage, thread))} |"
        for stage, thread in keys
    ]
    return "\n".join(
        [
            f"**4. Where one {rows:,}-row request's time goes**, in process (Django's test"
            f" client, SQLite, compiled path; median of {len(results['V2'])} requests each;"
            " wall ms per stage, stages nest, and other threads overlap the request's)",
            "",
            "| stage | thread | V2 infer ms | batch-predict ms |",
            "|---|---|---:|---:|",
            *lines,
        ]
    )


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--batch-requests", type=int, default=5)
    parser.add_argument("--no-perf-analyzer", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    command = "python bench/protocol_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    if not (ARTIFACTS / "random_forest.joblib").exists():
        subprocess.run(
            [sys.executable, str(REPO / "research" / "train.py"), "--out", str(ARTIFACTS)],
            check=True,
        )
    machine = Machine()
    sections: list[str] = []
    perf_command = ""
    tmp = Path(tempfile.mkdtemp(prefix="protocol-bench-"))
    try:
        server = Server(f"sqlite:///{tmp / 'db.sqlite3'}", compiled=True)
        with _stopped_on_error(server):
            log(f"server up, first prediction after {server.first_prediction_s:.2f} s")
            sections.append(
                one_row_table(one_row(server, tmp, args.rounds, args.seconds, machine), args.rounds)
            )
            print("\n" + sections[-1] + "\n", flush=True)
            times = many_rows(server, args.batch_rows, args.batch_requests, machine)
            sections.append(many_rows_table(times, args.batch_rows))
            print("\n" + sections[-1] + "\n", flush=True)
            if not args.no_perf_analyzer:
                perf_command, table = perf_analyzer(server, tmp, machine)
                sections.append(table)
                print("\n" + sections[-1] + "\n", flush=True)
        if not args.no_profile:
            machine.wait("4. in-process profile")
            log(f"4. in process, {args.batch_rows:,} rows, {args.batch_requests} requests each")
            stages = in_process(args.batch_rows, args.batch_requests, tmp)
            sections.append(profile_table(stages, args.batch_rows))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    header = (
        f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; one gunicorn server"
        " in the production configuration, 2 workers of 4 threads, SQLite, compiled path on;"
        " load generator: wrk)"
    )
    if perf_command:
        sections.append(f"perf_analyzer's command: `{perf_command}`")
    sections.append("Machine: " + "; ".join(machine.notes))
    table = "\n\n".join([header, *sections])
    print("\n" + table)
    save("protocol_bench", table)
    return 0


@contextlib.contextmanager
def _stopped_on_error(server: Server) -> Iterator[Server]:
    """``server`` started, and stopped however the block ends (also when it did not answer
    in time: ``Server.__enter__`` raises without stopping gunicorn)."""
    try:
        yield server.__enter__()
    finally:
        if getattr(server, "process", None) is not None:
            stop(server.process)


if __name__ == "__main__":
    sys.exit(main())
