"""Our server against its peers, MLflow's ``models serve`` and MLServer, on the same trees.

    .venv/bin/python bench/peers_bench.py [--rounds 2] [--seconds 10] [--rows 10000,100000]
        [--only ours,mlflow,mlserver]

Needs wrk (Debian: ``apt-get install wrk``) and curl. The peers are installed on first use,
each in a venv of its own (``bench/out/venvs/<name>``, git-ignored; the time the install
took is printed, and is not part of the table): MLflow ``MLFLOW_VERSION``, MLServer and
mlserver-sklearn ``MLSERVER_VERSION``, each with the scikit-learn of this project's venv so
that the pickled trees load.

The model: the Adult demo random forest (``research/artifacts/random_forest.joblib``, our
bundle). For the peers the bench builds, in each peer's venv, a scikit-learn ``Pipeline``
that encodes a row as our ``Preprocessing`` does (``BUILD``: a ``ColumnTransformer`` of an
``OrdinalEncoder`` on the bundle's categories, a missing or unknown category coded as the
column's fill value, and an imputer of each numeric column's fill value, then the columns
put back in the bundle's order) in front of the bundle's own fitted
``RandomForestClassifier``, and saves it with the peer's own tools
(``mlflow.sklearn.save_model``; a joblib file and ``model-settings.json`` for MLServer's
``mlserver_sklearn.SKLearnModel``). Once a run, on ``CHECK_ROWS`` rows of ``adult.test``,
every server's labels must equal those of our wrapper in process (``REFERENCE``); the bench
stops otherwise.

Every server gets 2 worker processes: ours is predict_bench's ``Server`` (gunicorn with the
production configuration: 2 workers x 4 threads, compiled path on, a fresh SQLite
database, migrated before the clock starts); MLflow ``--workers 2`` (uvicorn); MLServer
``parallel_workers: 2`` in ``settings.json``. The access logs are off for all three (ours:
``LOG_LEVEL=WARNING``; MLflow: ``UVICORN_ACCESS_LOG=false``; MLServer: ``debug: false``).

Each of ``--rounds`` rounds starts every server afresh (in an order that turns round each
round) and measures, taking the servers in turn for every measurement (A B C, then C B A:
this 2-core machine is shared and drifts):

1. start-up: seconds from spawning the server's process to its first answered prediction;
2. one record at 1 and at 8 connections, wrk with keep-alive, ``--seconds`` each after a
   warm-up of ``WARM_UP_SECONDS`` at 8 connections and two 1,000-row files: req/s, p50,
   p99. Ours: ``POST /api/v1/income_classifier/predict`` with a JSON record; MLflow:
   ``POST /invocations`` with ``{"dataframe_records": [record]}``; MLServer:
   ``POST /v2/models/income/infer``, a V2 request of one input per column (BYTES, INT64,
   FP64) with ``parameters.content_type = "pd"``; the same 200 records of ``adult.test``
   in turn;
3. a CSV file (``batch_bench.make_csv``) of each of ``--rows`` rows in one request, the
   best of ``UPLOADS`` uploads a round, curl's time from sending to the answer's last
   byte, the answer checked to hold one prediction a row. Ours: ``POST
   /api/v1/batch-predict`` (multipart ``file``), and again with ``log_requests=false``
   where the server takes it (a 400 marks it "not supported"; an answer whose rows still
   carry a ``request_id``, "ignored"); MLflow: ``POST /invocations``, the file as a
   ``text/csv`` body; MLServer, which has no CSV route: the same rows as one V2 JSON
   request, converted before the clock starts (that conversion is not counted).

For each measurement: the CPU seconds of the server's processes (every process of its
session, from ``/proc``), a flag where one process did more than ``ONE_PROCESS`` of it (the
load did not spread over the workers), and the cores busy outside the bench meanwhile
(shadow_bench's ``OtherLoad``). A Markdown table headed by the command is printed and
saved (``bench/out/peers_results.md``); the peers' logs are in ``bench/out/peers/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from batch_bench import make_csv
from predict_bench import PATH, Server, lua_script, records, wrk
from shadow_bench import OtherLoad

from common import ARTIFACTS, OUT, REPO, SERVER, cpu_of, free_port, log, save, server_env, stop

sys.path[:0] = [str(SERVER), str(REPO / "research")]

MLFLOW_VERSION = "3.18.0"
MLSERVER_VERSION = "1.7.1"
UVLOOP = "uvloop==0.21.0"  # the last before 0.22, for MLServer (``packages``)
VENVS = OUT / "venvs"
MODELS = OUT / "peers"  # the peers' saved models, settings and logs
ARTIFACT = "random_forest.joblib"
MODEL = "income"  # the model's name in MLServer
V2_PATH = f"/v2/models/{MODEL}/infer"
BATCH_PATH = "/api/v1/batch-predict?endpoint=income_classifier"
NO_LOG = "&log_requests=false"
CHECK_ROWS = 500
WARM_UP_SECONDS = 3
UPLOADS = 3  # of each file, per column and round; the best is kept
CONNECTIONS = (1, 8)
ONE_PROCESS = 0.9  # share of the server's CPU above which one process "did it all"
READY_TIMEOUT = 180.0
REFUSING_TIMEOUT = 30.0  # seconds a server may answer errors before its first prediction
NEGATIVE, POSITIVE = "<=50K", ">50K"
SERVERS = ("ours", "mlflow", "mlserver")
TITLES = {
    "ours": "ours",
    "ours_nolog": "ours, log_requests=false",
    "mlflow": f"MLflow {MLFLOW_VERSION}",
    "mlserver": f"MLServer {MLSERVER_VERSION}",
}


T = TypeVar("T")


class PeerUnavailable(RuntimeError):
    """A peer that could not be installed, built or started: the run goes on without it."""


# -- the peers' venvs and models ------------------------------------------------------------


def sklearn_version() -> str:
    import sklearn

    return str(sklearn.__version__)


def packages(peer: str) -> list[str]:
    sklearn = f"scikit-learn=={sklearn_version()}"
    if peer == "mlflow":
        return [f"mlflow=={MLFLOW_VERSION}", sklearn]
    # uvloop 0.22 and later raise in asyncio.get_event_loop() where no loop is set, as
    # MLServer 1.7.1's parallel workers call it before theirs: with the latest uvloop every
    # worker dies at start and the model never loads.
    return [
        f"mlserver=={MLSERVER_VERSION}",
        f"mlserver-sklearn=={MLSERVER_VERSION}",
        UVLOOP,
        sklearn,
    ]


def peer_venv(peer: str) -> tuple[Path, float | None]:
    """The peer's venv (``VENVS/<peer>``), made on first use, and the seconds its install
    took (None: it was there, with these packages)."""
    venv, wanted = VENVS / peer, packages(peer)
    marker = venv / "peers_bench-installed.txt"
    if marker.exists() and marker.read_text().split() == wanted:
        return venv, None
    log(f"{peer}: installing {' '.join(wanted)} into {venv}")
    started = time.perf_counter()
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", *wanted], capture_output=True, text=True
    )
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "is ignored" not in line]
        raise PeerUnavailable(f"pip install {' '.join(wanted)}: " + "\n".join(errors)[-1500:])
    marker.write_text("\n".join(wanted) + "\n")
    took = time.perf_counter() - started
    log(f"{peer}: installed in {took:.0f} s")
    return venv, took


def peer_env(venv: Path) -> dict[str, str]:
    return dict(
        os.environ,
        PATH=f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        # No telemetry (no network here anyway), no per-request access line (ours has none).
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        UVICORN_ACCESS_LOG="false",
        MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT="900",
    )


# Run by each peer's python: our bundle's forest behind scikit-learn's own encoders, saved
# with the peer's tools. Prints the forest's classes (what the peers answer).
BUILD = r"""
import json, sys
from pathlib import Path

import joblib
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

artifact, peer, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
bundle = joblib.load(artifact)
pre = bundle["preprocessing"]
forest = bundle["estimator"].set_params(n_jobs=1)  # as we serve it (runtime.single_threaded)
# A whole number as an int: SimpleImputer refuses a column at transform of another kind than
# at fit (the int columns of JSON records and CSV files, against float fill values).
fills = {
    name: int(value) if isinstance(value, float) and value.is_integer() else value
    for name, value in pre["fill_values"].items()
}
features = list(pre["features"])
categorical = [name for name in features if name in pre["categories"]]
numeric = [name for name in features if name not in pre["categories"]]
# A category's code is its index. A missing one, or one the model never saw (our encoding
# treats both alike), is coded -1, then given the code of the column's fill value: an
# imputer of the most frequent value, fitted on one row of fill values, fills each column
# with its own (OrdinalEncoder refuses a known code for unknown or missing categories).
# Numeric columns: the same imputer, NaN to the column's fill value.
code = OrdinalEncoder(
    categories=[list(pre["categories"][name]) for name in categorical],
    handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1,
    dtype="float64",
)
encode = ColumnTransformer([
    ("categorical", Pipeline([
        ("code", code), ("fill", SimpleImputer(missing_values=-1.0, strategy="most_frequent"))
    ]), categorical),
    ("numeric", SimpleImputer(strategy="most_frequent"), numeric),
])
# The forest's column order (the bundle's), from the encoder's (categorical, numeric).
encoded = categorical + numeric
order = ColumnTransformer([("order", "passthrough", [encoded.index(name) for name in features])])
pipeline = Pipeline([("encode", encode), ("order", order), ("forest", forest)])
pipeline[:-1].fit(pd.DataFrame({name: [fills[name]] for name in features}))
if peer == "mlflow":
    import mlflow.sklearn
    import skops.io
    import sklearn

    # MLflow's default format, skops, loads only the types it is told to trust: the ones
    # skops finds in this pipeline (ours, built here from our own artifact).
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
    print("TRUSTED " + json.dumps(trusted))
    mlflow.sklearn.save_model(
        pipeline, str(out), pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
        skops_trusted_types=trusted,
    )
else:
    out.mkdir(parents=True)
    joblib.dump(pipeline, out / "model.joblib")
print("BUILT " + json.dumps([str(c) for c in forest.classes_]))
"""


def build_model(peer: str, venv: Path) -> tuple[Path, str]:
    """The peer's model folder, built afresh in the peer's venv from our artifact; and how
    it was saved."""
    MODELS.mkdir(parents=True, exist_ok=True)
    folder = MODELS / peer
    shutil.rmtree(folder, ignore_errors=True)
    # MLServer reads every model-settings.json under the folder it starts in: the model
    # goes in a folder of its own, settings.json (written at each start) above it.
    out = folder / "model" if peer == "mlflow" else folder / MODEL
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", BUILD, str(ARTIFACTS / ARTIFACT), peer, str(out)],
        capture_output=True,
        text=True,
        env=peer_env(venv),
    )
    built = [line for line in done.stdout.splitlines() if line.startswith("BUILT ")]
    if done.returncode != 0 or not built:
        raise PeerUnavailable(f"building the pipeline for {peer}: {done.stderr.strip()[-1500:]}")
    classes = json.loads(built[0].split(" ", 1)[1])
    if classes != ["0", "1"]:
        raise PeerUnavailable(f"the forest's classes are {classes}, not 0 and 1")
    saved = "a joblib file, `model-settings.json` (`mlserver_sklearn.SKLearnModel`)"
    trusted = [line for line in done.stdout.splitlines() if line.startswith("TRUSTED ")]
    if trusted:
        types = ", ".join(json.loads(trusted[0].split(" ", 1)[1]))
        saved = f"`mlflow.sklearn.save_model`, its default skops format, trusting {types}"
    if peer == "mlserver":
        settings = {
            "name": MODEL,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "v1"},
        }
        (out / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return folder, saved


# -- the bodies ------------------------------------------------------------------------------


def v2_request(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A V2 infer request of ``rows`` as pandas-codec columns: one input per column, BYTES
    for the categorical ones, INT64 for whole numbers, FP64 otherwise; a missing value is
    null (a BYTES input of nulls is a column of None, as a JSON record's)."""
    from adult import schema

    inputs = []
    for name in rows[0]:
        values = [row[name] for row in rows]
        present = [v for v in values if v is not None]
        if name in schema.CATEGORY_DOMAINS:
            datatype = "BYTES"
        elif all(isinstance(v, int) for v in present) and len(present) == len(values):
            datatype = "INT64"
        else:
            datatype = "FP64"
        inputs.append({"name": name, "shape": [len(rows)], "datatype": datatype, "data": values})
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def csv_records(path: Path) -> list[dict[str, Any]]:
    """The features of a CSV file's rows as JSON records (a missing value is None)."""
    import pandas as pd

    from adult import schema

    frame = pd.read_csv(path)[list(schema.FEATURES)]
    rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return rows


def v2_file(path: Path) -> Path:
    """The rows of the CSV file ``path`` as one V2 JSON request, written beside it."""
    target = path.with_suffix(".v2.json")
    if not target.exists() or target.stat().st_mtime < path.stat().st_mtime:
        target.write_text(json.dumps(v2_request(csv_records(path))))
    return target


def one_record_body(server: str, record: dict[str, Any]) -> dict[str, Any]:
    if server == "mlflow":
        return {"dataframe_records": [record]}
    if server == "mlserver":
        return v2_request([record])
    return record


def predict_path(server: str) -> str:
    return {"ours": PATH, "mlflow": "/invocations", "mlserver": V2_PATH}[server]


def labels_of(server: str, answer: Any) -> tuple[list[str], bool]:
    """The labels of a batch answer, and whether ours logged its rows (a ``request_id``)."""
    if server == "ours":
        rows = answer["predictions"]
        return [row["label"] for row in rows], bool(rows) and "request_id" in rows[0]
    values = answer["predictions"] if server == "mlflow" else answer["outputs"][0]["data"]
    return [POSITIVE if str(v) in ("1", "1.0", "True") else NEGATIVE for v in values], False


# Run by our venv's python in the server's folder: the labels our wrapper gives a file's rows
# (its own encoding and scikit-learn; no server).
REFERENCE = r"""
import json, sys
import django
django.setup()
import pandas as pd
from pathlib import Path
from apps.ml.income_classifier import IncomeClassifier

wrapper = IncomeClassifier.from_artifact(Path(sys.argv[1]), sys.argv[2])
matrix = wrapper.preprocessing.encode_frame(pd.read_csv(sys.argv[3]))
print("LABELS " + json.dumps(wrapper.labels_for(wrapper.predict_proba(matrix))))
"""


def reference_labels(path: Path) -> list[str]:
    env = server_env("sqlite://:memory:") | {"DJANGO_SETTINGS_MODULE": "server.settings"}
    done = subprocess.run(
        [sys.executable, "-c", REFERENCE, str(ARTIFACTS), ARTIFACT, str(path)],
        cwd=SERVER,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    [line] = [line for line in done.stdout.splitlines() if line.startswith("LABELS ")]
    labels: list[str] = json.loads(line.split(" ", 1)[1])
    return labels


# -- the servers -----------------------------------------------------------------------------


def session_pids(sid: int) -> list[int]:
    """Every process of the session ``sid`` (a server started in a session of its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if int(fields[3]) == sid:
                found.append(int(entry.name))
    return sorted(found)


def cpu_by_process(sid: int) -> dict[int, float]:
    return {pid: cpu for pid in session_pids(sid) if (cpu := cpu_of(pid)) is not None}


@dataclass
class Target:
    """A server that answers: where, and its session (the id of the process started)."""

    server: str
    url: str
    sid: int
    ready_s: float = 0.0
    ready_cpu: dict[int, float] = field(default_factory=dict)
    ready_other: float = 0.0

    def cpu(self) -> dict[int, float]:
        return cpu_by_process(self.sid)


def _post_ok(url: str, body: bytes) -> bool:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return bool(answer.status == 200)


@contextmanager
def start_ours(folder: Path, n: int) -> Iterator[Target]:
    server = Server(f"sqlite:///{folder / f'ours{n}.sqlite3'}", True)  # migrates first
    other = OtherLoad([])
    with server:  # timed from spawning gunicorn to the first answered prediction
        sid = server.process.pid
        other.pids = session_pids(sid)
        ready = Target("ours", server.url, sid, server.first_prediction_s, cpu_by_process(sid))
        ready.ready_other = other.cores()
        yield ready
    _kill_left(sid)


def peer_command(server: str, venv: Path, folder: Path, port: int) -> list[str]:
    if server == "mlflow":
        return [
            str(venv / "bin" / "mlflow"), "models", "serve", "-m", str(folder / "model"),
            "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "2",
        ]  # fmt: skip
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": 2,
        "debug": False,  # no access log line per request
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return [str(venv / "bin" / "mlserver"), "start", str(folder)]


@contextmanager
def start_peer(server: str, venv: Path, folder: Path, body: bytes) -> Iterator[Target]:
    port = free_port()
    command = peer_command(server, venv, folder, port)
    url = f"http://127.0.0.1:{port}"
    output = (MODELS / f"{server}.log").open("ab")
    other = OtherLoad([])
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=folder,
        env=peer_env(venv),
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        last, refusing = "", None
        while True:  # poll until a prediction is answered
            try:
                if _post_ok(url + predict_path(server), body):
                    break
            except urllib.error.HTTPError as error:
                last = f"{error.code} {error.read()[:1000]!r}"
                # Up, but refusing: loading the model (MLServer: 400 "not ready"), or not.
                refusing = refusing or time.perf_counter()
                if time.perf_counter() - refusing > REFUSING_TIMEOUT:
                    raise PeerUnavailable(f"{server} answers the prediction {last}") from None
                time.sleep(0.05)
            except OSError as error:
                last = str(error)
                time.sleep(0.05)
            if process.poll() is not None or time.perf_counter() - started > READY_TIMEOUT:
                tail = (MODELS / f"{server}.log").read_text(errors="replace")[-1500:]
                raise PeerUnavailable(
                    f"{server} did not answer a prediction (exit code {process.poll()},"
                    f" last answer: {last}); its log ends:\n{tail}"
                )
        ready = time.perf_counter() - started
        other.pids = session_pids(process.pid)
        yield Target(server, url, process.pid, ready, cpu_by_process(process.pid), other.cores())
    finally:
        stop(process)
        _kill_left(process.pid)
        output.close()


def _kill_left(sid: int) -> None:
    """Whatever of a stopped server's session is still there (a worker its parent left)."""
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Measure:
    value: float  # seconds to ready, req/s or rows/s
    cpu: dict[int, float]  # CPU seconds per process of the server
    other: float  # cores busy outside the bench meanwhile
    p50: float = float("nan")
    p99: float = float("nan")
    requests: int = 0
    errors: int = 0
    started: int = 0  # the pid of the process started (the session's leader)

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu.values())

    @property
    def busiest(self) -> float:
        """The busiest process's share of the server's CPU (0 when it did next to none)."""
        total = self.cpu_s
        return max(self.cpu.values()) / total if total > 0.05 else 0.0


def used_since(target: Target, before: dict[int, float]) -> dict[int, float]:
    return {pid: cpu - before.get(pid, 0.0) for pid, cpu in target.cpu().items()}


def run_wrk(target: Target, script: Path, connections: int, seconds: int) -> Measure:
    before, other = target.cpu(), OtherLoad(session_pids(target.sid))
    r = wrk(target.url, script, connections, seconds, path=predict_path(target.server))
    other_cores = other.cores()
    return Measure(
        r["rps"],
        used_since(target, before),
        other_cores,
        p50=r["p50"],
        p99=r["p99"],
        requests=int(r["requests"]),
        errors=int(r["errors"]),
        started=target.sid,
    )


def upload(target: Target, path: Path, no_log: bool = False) -> tuple[int, float, Any]:
    """One file to the server (curl): the HTTP status, the seconds from sending to the
    answer's last byte, and the answer (parsed JSON, or its text when not 200)."""
    with tempfile.NamedTemporaryFile(dir=MODELS, suffix=".answer") as answer:
        command = ["curl", "-sS", "--max-time", "900", "-H", "Expect:", "-o", answer.name]
        command += ["-w", "%{http_code} %{time_total}"]
        if target.server == "ours":
            url = target.url + BATCH_PATH + (NO_LOG if no_log else "")
            command += ["-F", f"file=@{path}", url]
        elif target.server == "mlflow":
            command += ["-H", "Content-Type: text/csv", "--data-binary", f"@{path}"]
            command.append(target.url + "/invocations")
        else:
            command += ["-H", "Content-Type: application/json", "--data-binary"]
            command += [f"@{v2_file(path)}", target.url + V2_PATH]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        status, seconds = done.stdout.split()
        content = Path(answer.name).read_bytes()
    if status != "200":
        return int(status), float(seconds), content.decode(errors="replace")[:500]
    return 200, float(seconds), json.loads(content)


def run_upload(target: Target, path: Path, rows: int, no_log: bool = False) -> Measure:
    before, other = target.cpu(), OtherLoad(session_pids(target.sid))
    status, seconds, answer = upload(target, path, no_log)
    other_cores = other.cores()
    if status != 200:
        raise RuntimeError(f"{target.server}: {path.name} answered {status}: {answer}")
    labels, _ = labels_of(target.server, answer)
    if len(labels) != rows:
        raise RuntimeError(f"{target.server}: {len(labels):,} predictions for {rows:,} rows")
    cpu = used_since(target, before)
    return Measure(rows / seconds, cpu, other_cores, requests=1, started=target.sid)


def check_labels(targets: dict[str, Target], samples: list[dict[str, Any]], folder: Path) -> str:
    """Every server's labels against our wrapper's, in process: for ``CHECK_ROWS`` rows of
    a file in one request, and for each of the one-record bodies wrk sends (so none of
    them is refused either)."""
    import pandas as pd

    path = make_csv(CHECK_ROWS)
    one_by_one = folder / "records.csv"
    pd.DataFrame(samples).to_csv(one_by_one, index=False)
    expected = {path: reference_labels(path), one_by_one: reference_labels(one_by_one)}
    for name, target in targets.items():
        status, _, answer = upload(target, path)
        if status != 200:
            raise RuntimeError(f"{name}: the check file answered {status}: {answer}")
        answers = {path: labels_of(name, answer)[0], one_by_one: []}
        for record in samples:
            body = json.dumps(one_record_body(name, record)).encode()
            request = urllib.request.Request(
                target.url + predict_path(name), body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                one = json.loads(response.read())
            labels = [one["label"]] if name == "ours" else labels_of(name, one)[0]
            answers[one_by_one] += labels
        for source, labels in answers.items():
            want = expected[source]
            wrong = [i for i, (a, b) in enumerate(zip(labels, want, strict=False)) if a != b]
            if wrong or len(labels) != len(want):
                raise RuntimeError(
                    f"{name} does not give our labels: {len(labels)} answers for"
                    f" {len(want)} rows of {source.name}, {len(wrong)} differ (rows"
                    f" {wrong[:10]}); the peers' pipeline is not our model"
                )
        log(f"check: {name} gives our wrapper's labels ({CHECK_ROWS} + {len(samples)} rows)")
    return (
        f"every server's labels equal our wrapper's (in process) on the {CHECK_ROWS} rows of"
        f" {path.name} in one request, and on each of the {len(samples)} one-record bodies"
    )


def probe_no_log(target: Target) -> str:
    """Whether ours takes ``log_requests=false``: "" when it does, else why not."""
    status, _, answer = upload(target, make_csv(1000), no_log=True)
    if status == 400:
        return f"not supported (400: {str(answer)[:120]})"
    if status != 200:
        raise RuntimeError(f"ours: log_requests=false answered {status}: {answer}")
    if labels_of("ours", answer)[1]:
        return "ignored: the answer's rows still carry a request_id (logged)"
    return ""


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Run:
    results: dict[tuple[str, str], list[Measure]] = field(default_factory=dict)
    installs: dict[str, float | None] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    saved: dict[str, str] = field(default_factory=dict)  # how each peer's model was saved
    no_log: str = "not tried"
    check: str = "not done"
    v2_mb: dict[int, tuple[float, float]] = field(default_factory=dict)

    def add(self, measurement: str, column: str, measure: Measure) -> None:
        self.results.setdefault((measurement, column), []).append(measure)


def measure(args: argparse.Namespace, sizes: list[int], folder: Path) -> Run:
    run = Run()
    venvs: dict[str, Path] = {}
    models: dict[str, Path] = {}
    for peer in (s for s in args.only if s != "ours"):
        try:
            venvs[peer], run.installs[peer] = peer_venv(peer)
            models[peer], run.saved[peer] = build_model(peer, venvs[peer])
        except PeerUnavailable as error:
            log(f"{peer}: unavailable: {error}")
            run.unavailable[peer] = str(error)
    servers = [s for s in args.only if s == "ours" or s in models]
    samples = records()
    scripts = {
        s: lua_script([one_record_body(s, r) for r in samples], folder, f"{s}.lua") for s in servers
    }
    first = {s: json.dumps(one_record_body(s, samples[0])).encode() for s in servers}
    small = make_csv(1000)
    files = {rows: make_csv(rows) for rows in sizes}
    for rows, path in files.items():
        if "mlserver" in servers:
            run.v2_mb[rows] = (path.stat().st_size / 1e6, v2_file(path).stat().st_size / 1e6)
    turn = 0

    def in_turn(names: list[T]) -> list[T]:
        nonlocal turn
        turn += 1
        return names if turn % 2 else names[::-1]

    for round_ in range(args.rounds):
        order = servers if round_ % 2 == 0 else servers[::-1]
        with ExitStack() as stack:
            targets: dict[str, Target] = {}
            for name in list(order):
                log(f"round {round_ + 1}: starting {name}")
                try:
                    if name == "ours":
                        target = stack.enter_context(start_ours(folder, round_))
                    else:
                        target = stack.enter_context(
                            start_peer(name, venvs[name], models[name], first[name])
                        )
                except PeerUnavailable as error:
                    log(f"{name}: unavailable: {error}")
                    run.unavailable[name] = str(error)
                    servers.remove(name)
                    continue
                targets[name] = target
                log(f"round {round_ + 1}: {name} answered after {target.ready_s:.2f} s")
                run.add(
                    "start",
                    name,
                    Measure(
                        target.ready_s, target.ready_cpu, target.ready_other, started=target.sid
                    ),
                )
            for target in targets.values():  # every worker loads its model, sees a file
                wrk(
                    target.url,
                    scripts[target.server],
                    8,
                    WARM_UP_SECONDS,
                    path=predict_path(target.server),
                )
                for _ in range(2):
                    run_upload(target, small, 1000)
            if round_ == 0:
                run.check = check_labels(targets, samples, folder)
                if "ours" in targets:
                    run.no_log = probe_no_log(targets["ours"])
                    log(f"ours, log_requests=false: {run.no_log or 'taken'}")
            names = list(targets)
            for connections in CONNECTIONS:
                for name in in_turn(names):
                    log(f"round {round_ + 1}: {name}, {connections} connection(s)")
                    run.add(
                        f"wrk{connections}",
                        name,
                        run_wrk(targets[name], scripts[name], connections, args.seconds),
                    )
            columns = [(n, False) for n in names]
            if "ours" in targets and not run.no_log:
                columns.insert(names.index("ours") + 1, ("ours", True))
            for rows, path in files.items():
                best: dict[str, Measure] = {}
                for k in range(UPLOADS):
                    for name, no_log in in_turn(columns):
                        column = "ours_nolog" if no_log else name
                        log(f"round {round_ + 1}: {column}, {rows:,} rows, upload {k + 1}")
                        m = run_upload(targets[name], path, rows, no_log)
                        if column not in best or m.value > best[column].value:
                            best[column] = m
                for column, m in best.items():
                    run.add(f"csv{rows}", column, m)
    return run


# -- the table ----------------------------------------------------------------------------------


def table(run: Run, args: argparse.Namespace, sizes: list[int], command: str) -> str:
    columns = [c for c in ("ours", "ours_nolog", "mlflow", "mlserver") if _has(run, c)]
    peers = [c for c in columns if c in ("mlflow", "mlserver")]

    def got(measurement: str, column: str) -> list[Measure]:
        return run.results.get((measurement, column), [])

    def median(measurement: str, column: str, key: Callable[[Measure], float]) -> float:
        return statistics.median(key(m) for m in got(measurement, column))

    def cells(measurement: str, render: Callable[[list[Measure]], str]) -> str:
        return " | ".join(
            render(got(measurement, c)) if got(measurement, c) else "" for c in columns
        )

    def rounds(ms: list[Measure], fmt: str) -> str:
        value = format(statistics.median(m.value for m in ms), fmt)
        if len(ms) == 1:
            return value
        return f"{value} [{', '.join(format(m.value, fmt) for m in ms)}]"

    def ratio(measurement: str, higher_is_better: bool) -> str:
        if not got(measurement, "ours") or not peers:
            return ""
        value = {c: median(measurement, c, lambda m: m.value) for c in peers if got(measurement, c)}
        best = (max if higher_is_better else min)(value, key=lambda c: value[c])
        text = (
            f"{median(measurement, 'ours', lambda m: m.value) / value[best]:.2f} ({TITLES[best]})"
        )
        if got(measurement, "ours_nolog"):
            nolog = median(measurement, "ours_nolog", lambda m: m.value)
            text += f"; log_requests=false {nolog / value[best]:.2f}"
        return text

    def flags(measurement: str) -> str:
        flagged = []
        for c in columns:
            shares = [m.busiest for m in got(measurement, c)]
            if shares and max(shares) > ONE_PROCESS:
                flagged.append(f"{TITLES[c]} ({max(shares):.0%})")
        return ", ".join(flagged) or "none"

    def cpu_cell(ms: list[Measure], per_request: bool = False) -> str:
        cpu = statistics.median(m.cpu_s for m in ms)
        text = f"{cpu:.2f} s"
        if per_request:
            text += (
                f", {statistics.median(m.cpu_s / max(m.requests, 1) for m in ms) * 1e3:.2f} ms/req"
            )
        last = ms[-1]  # how the last round's CPU was split over the server's processes
        if not last.busiest:
            return f"{text}; too little to split over {len(last.cpu)} procs"
        shares = sorted(((c / last.cpu_s, pid) for pid, c in last.cpu.items()), reverse=True)
        shown = [
            f"{share:.0%}" + ("*" if pid == last.started else "")
            for share, pid in shares
            if share >= 0.05
        ]
        return f"{text}; {' / '.join(shown)} of it in {len(shown)} of {len(shares)} procs"

    def other_cell(ms: list[Measure]) -> str:
        return ", ".join(f"{m.other:.2f}" for m in ms)

    rows = [
        f"| start to first prediction, s | {cells('start', lambda ms: rounds(ms, '.2f'))} |"
        f" {ratio('start', False)} | |",
        f"| &nbsp; CPU to ready | {cells('start', cpu_cell)} | | |",
        f"| &nbsp; other load, cores | {cells('start', other_cell)} | | |",
    ]
    for connections in CONNECTIONS:
        key = f"wrk{connections}"

        def rps(ms: list[Measure]) -> str:
            errors = sum(m.errors for m in ms)
            return rounds(ms, ",.0f") + (f" ({errors} errors)" if errors else "")

        def latency(ms: list[Measure]) -> str:
            p50 = statistics.median(m.p50 for m in ms)
            return f"{p50:.2f} / {statistics.median(m.p99 for m in ms):.2f}"

        rows += [
            f"| 1 record, {connections} conn.: req/s | {cells(key, rps)} |"
            f" {ratio(key, True)} | {flags(key)} |",
            f"| &nbsp; p50 / p99 ms | {cells(key, latency)} | | |",
            f"| &nbsp; server CPU | {cells(key, lambda ms: cpu_cell(ms, True))} | | |",
            f"| &nbsp; other load, cores | {cells(key, other_cell)} | | |",
        ]
    for size in sizes:
        key = f"csv{size}"
        rows += [
            f"| CSV {size:,} rows: rows/s, best of {UPLOADS} |"
            f" {cells(key, lambda ms: rounds(ms, ',.0f'))} |"
            f" {ratio(key, True)} | {flags(key)} |",
            f"| &nbsp; server CPU of the best upload | {cells(key, cpu_cell)} | | |",
            f"| &nbsp; other load, cores | {cells(key, other_cell)} | | |",
        ]
    notes = [f"- check: {run.check}"]
    if "ours" in args.only:
        notes.append(f"- ours with `log_requests=false`: {run.no_log or 'taken (its own column)'}")
    for peer in ("mlflow", "mlserver"):
        if peer in run.installs:
            took = run.installs[peer]
            where = VENVS / peer
            notes.append(
                f"- {TITLES[peer]}: venv {where.relative_to(REPO)} "
                + (
                    "installed in this run, " + f"{took:.0f} s"
                    if took is not None
                    else "already there"
                )
                + f" ({', '.join(packages(peer))}); model saved as {run.saved.get(peer, '-')}"
            )
        if peer in run.unavailable:
            why = " ".join(run.unavailable[peer].split())[-400:]
            notes.append(f"- {TITLES[peer]}: not run: `{why}`")
    for size, (csv_mb, v2_mb) in run.v2_mb.items():
        notes.append(
            f"- MLServer has no CSV route: it gets the {size:,} rows as one V2 JSON request"
            f" ({v2_mb:.1f} MB against the CSV's {csv_mb:.1f} MB), converted before the clock"
            " starts: that conversion is not counted"
        )
    if "mlserver" in run.installs:
        notes.append(
            f"- MLServer with {UVLOOP}: with uvloop 0.22 or later (0.23.0 is the latest"
            " here) MLServer 1.7.1's parallel workers die at start (`RuntimeError: There is"
            " no current event loop in thread 'MainThread'`) and the model never loads"
        )
    notes += [
        "- ours / best peer: ours' value over the best peer's (req/s, rows/s: above 1, ours"
        " is faster; start-up seconds: below 1, ours is up sooner)",
        "- ours: gunicorn 2 workers x 4 threads, compiled path on, SQLite (predict_bench's"
        " `Server`); MLflow: `mlflow models serve --env-manager local --workers 2` (uvicorn);"
        " MLServer: `mlserver start`, `parallel_workers: 2` (a front process and 2 inference"
        " workers); access logs off for all. Ours scores small batches with ONNX Runtime"
        " (its compiled form of the forest, verified against scikit-learn) and large ones with"
        " scikit-learn; the peers always with scikit-learn",
        "- server CPU: every process of the server's session, from /proc (the median of the"
        " rounds), and how the last round's was split over them (the processes that did 5 %"
        " or more; * the process started: gunicorn's master, the `mlflow` command, MLServer's"
        " front process, which serves HTTP and hands each request to a worker); flagged when"
        f" one process did more than {ONE_PROCESS:.0%} of it in any"
        " round: the load did not spread (one keep-alive connection, or one file, goes to one"
        " worker)",
        "- other load: cores busy outside the bench's own processes and the measured server,"
        " each round's value",
    ]
    header = " | ".join(TITLES[c] for c in columns)
    return "\n".join(
        [
            f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, scikit-learn"
            f" {sklearn_version()} everywhere, the same random forest; median of {args.rounds}"
            f" round(s) [each round]; wrk {args.seconds} s a measurement)",
            "",
            f"| measurement | {header} | ours / best peer |"
            f" one process > {ONE_PROCESS:.0%} of CPU |",
            "|---|" + "---:|" * len(columns) + "---|---|",
            *rows,
            "",
            *notes,
        ]
    )


def _has(run: Run, column: str) -> bool:
    return any(c == column for _, c in run.results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rows", default="10000,100000", help="rows of each CSV file")
    parser.add_argument("--only", default=",".join(SERVERS), help="ours,mlflow,mlserver")
    args = parser.parse_args()
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(args.only) - set(SERVERS):
        parser.error(f"--only: unknown server(s) {sorted(unknown)}")
    sizes = [int(s) for s in args.rows.split(",")]
    command = shlex.join(["python", "bench/peers_bench.py", *sys.argv[1:]])
    for tool in ("wrk", "curl"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: apt-get install {tool}", file=sys.stderr)
            return 2
    if not (ARTIFACTS / ARTIFACT).exists():
        print(f"No demo models in {ARTIFACTS}: make train", file=sys.stderr)
        return 2
    MODELS.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="peers-bench-"))
    try:
        run = measure(args, sizes, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    text = table(run, args, sizes, command)
    print("\n" + text)
    save("peers_results", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
