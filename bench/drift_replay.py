"""The proof of drift monitoring (issue 28) against a live server and the real demo forest.

    .venv/bin/python bench/drift_replay.py [--threads 8] [--rows 5000]

gunicorn with the production configuration (predict_bench's ``Server``: 2 workers of 4
threads, the compiled path) on a fresh SQLite database, serving the demo models as
registered by ``migrate`` from a copy of research/artifacts (``private_artifacts`` of
drift_bench.py): the Adult random forest in production, with its training data
(``adult_reference.csv``) as its drift reference.

(i) No change: the whole test split of the census (``adult.test``, 16,281 rows) replayed
    through single predictions (``POST /api/v1/income_classifier/predict``, one record a
    request, ``--threads`` clients in parallel), then ``GET /api/v1/income_classifier/drift``;
    then through one batch-predict (``POST /api/v1/batch-predict``, the whole split as
    one CSV file) and the drift read again. Each feature's measures, thresholds, shares and
    flags are printed: none should be flagged.
(ii) One change at a time, each on a server started afresh on a fresh copy of the
    database (so on an empty window): the first ``--rows`` rows of the test split, changed,
    sent as one batch-predict file, then the drift read. The changes: age + 10 years;
    hours-per-week x 1.5 (rounded); 30 % of workclass replaced by a value the reference
    never had (the file is refused with a 400, and its rows count all the same); occupation
    missing in 20 % of rows. Exactly the changed feature should be flagged.

The window is shared through the database and each worker writes its records every
``DRIFT_FLUSH_SECONDS`` (1 s); reading the drift route writes only the answering worker's
own, so every read waits ``FLUSH_WAIT`` seconds after the last record was sent. Before a
change's file, the server's first prediction (``Server`` waits for one) is written first
for the same reason: the window's last ``--rows`` records are then the file's rows.

Prints a Markdown table headed by the command, and saves it
(``bench/out/drift_replay.md``); exits 1 if a change was not found as expected.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from drift_bench import ENDPOINT, private_artifacts, template_database
from predict_bench import Server

from common import ARTIFACTS, REPO, SERVER, log, save

sys.path[:0] = [str(SERVER), str(REPO / "research")]

FLUSH_WAIT = 1.5  # s: DRIFT_FLUSH_SECONDS and a margin
UNSEEN = "Gig-economy"  # a workclass the census never had


@dataclass(frozen=True)
class Change:
    name: str
    feature: str  # the changed feature: the only one that should be flagged
    change: Callable[[Any, Any], Any]  # (frame, numpy Generator) -> the changed frame
    status: str = "200"  # what batch-predict should answer


def _older(frame: Any, rng: Any) -> Any:
    return frame.assign(age=frame["age"] + 10)


def _longer_weeks(frame: Any, rng: Any) -> Any:
    return frame.assign(**{"hours-per-week": (frame["hours-per-week"] * 1.5).round()})


def _unseen_workclass(frame: Any, rng: Any) -> Any:
    frame = frame.copy()
    frame.loc[rng.random(len(frame)) < 0.3, "workclass"] = UNSEEN
    return frame


def _occupation_missing(frame: Any, rng: Any) -> Any:
    import numpy as np

    frame = frame.copy()
    frame.loc[rng.random(len(frame)) < 0.2, "occupation"] = np.nan
    return frame


CHANGES = (
    Change("age + 10 years", "age", _older),
    Change("hours-per-week x 1.5", "hours-per-week", _longer_weeks),
    Change(f"30 % of workclass unseen ({UNSEEN!r})", "workclass", _unseen_workclass, "400"),
    Change("occupation missing in 20 % of rows", "occupation", _occupation_missing),
)


# -- the server's routes ------------------------------------------------------------------


def test_split() -> Any:
    """adult.test's feature columns (missing values NaN), in file order."""
    from adult import load_split, schema

    return load_split("adult.test")[list(schema.FEATURES)]


def batch_predict(url: str, frame: Any, folder: Path, name: str) -> str:
    """POST ``frame`` as a CSV file to batch-predict; the HTTP status."""
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    done = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-F", f"file=@{path}",
         f"{url}/api/v1/batch-predict?endpoint={ENDPOINT}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


def single_predictions(url: str, frame: Any, threads: int) -> dict[int, int]:
    """Every row of ``frame`` as its own predict request (JSON, a missing value null),
    ``threads`` clients each on a kept-alive connection; the count of each HTTP status."""
    bodies = [json.dumps(r).encode() for r in json.loads(frame.to_json(orient="records"))]
    parts = urlsplit(url)
    local = threading.local()
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def send(body: bytes) -> None:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(
                parts.hostname or "127.0.0.1", parts.port, timeout=60
            )
        connection.request(
            "POST",
            f"/api/v1/{ENDPOINT}/predict",
            body,
            {"Content-Type": "application/json"},
        )
        answer = connection.getresponse()
        answer.read()
        with lock:
            statuses[answer.status] = statuses.get(answer.status, 0) + 1

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, bodies))
    return statuses


def forest_drift(url: str) -> dict[str, Any]:
    """The forest's entry in the endpoint's drift answer, once every worker has written."""
    time.sleep(FLUSH_WAIT)
    with urllib.request.urlopen(f"{url}/api/v1/{ENDPOINT}/drift", timeout=60) as answer:
        versions = json.loads(answer.read())["versions"]
    [forest] = [v for v in versions if v["name"] == "random forest"]
    return dict(forest)


# -- the tables ---------------------------------------------------------------------------


def flagged(version: dict[str, Any], role: str = "input") -> dict[str, list[str]]:
    return {f["name"]: f["flags"] for f in version["features"] if f["flags"] and f["role"] == role}


def by_name(version: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(next(f for f in version["features"] if f["name"] == name))


def _value(feature: dict[str, Any], name: str) -> tuple[float | None, float]:
    """A measure's or share's value as it is compared with its threshold (the missing
    share: points above the reference's)."""
    threshold = float(feature["thresholds"][name])
    if name in feature["measures"]:
        return feature["measures"][name], threshold
    share = feature["shares"].get(name)
    if name == "missing" and share is not None:
        share -= feature["shares"]["reference_missing"] or 0.0
    return share, threshold


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _against(feature: dict[str, Any], names: list[str]) -> str:
    parts = []
    for name in names:
        value, threshold = _value(feature, name)
        what = "missing, points above the reference's" if name == "missing" else name
        parts.append(f"{what} {_number(value)} (threshold {threshold:.3f})")
    return "; ".join(parts)


def _flags_text(flags: dict[str, list[str]]) -> str:
    return ", ".join(f"{name} ({', '.join(by)})" for name, by in flags.items()) or "none"


def feature_table(version: dict[str, Any]) -> list[str]:
    """Each feature's numbers, in profile order (inputs, then the output)."""
    lines = [
        "| feature | kind | rows | PSI (threshold) | JS or Wasserstein (threshold) |"
        " missing (reference) | invalid | unseen or out of range | flags |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for f in sorted(version["features"], key=lambda f: (f["role"] != "input", f["name"])):
        second = "js" if f["kind"] == "categorical" else "wasserstein"
        shares = f["shares"]
        other = "unseen" if f["kind"] == "categorical" else "out_of_range"
        lines.append(
            f"| {f['name']}{' (output)' if f['role'] == 'output' else ''} | {f['kind']} |"
            f" {f['rows']:,} | {_number(f['measures']['psi'])} ({f['thresholds']['psi']:.3f}) |"
            f" {second} {_number(f['measures'][second])} ({f['thresholds'][second]:.3f}) |"
            f" {_number(shares['missing'])} ({_number(shares['reference_missing'])}) |"
            f" {_number(shares['invalid'])} | {other} {_number(shares.get(other))} |"
            f" {', '.join(f['flags']) or '-'} |"
        )
    return lines


def closest(version: dict[str, Any]) -> str:
    """The input measure nearest its threshold (when nothing is flagged)."""
    best: tuple[float, str] = (0.0, "-")
    for f in version["features"]:
        if f["role"] != "input":
            continue
        for name in [*f["measures"], "missing", "invalid", "unseen", "out_of_range"]:
            if name not in f["thresholds"]:
                continue
            value, threshold = _value(f, name)
            if value is not None and threshold and value / threshold > best[0]:
                best = (value / threshold, f"{f['name']}: {_against(f, [name])}")
    return f"nearest a threshold: {best[1]}"


@dataclass
class Outcome:
    change: str
    sent: str  # what was sent and what the server answered
    version: dict[str, Any]
    feature: str | None  # the changed feature (None: no change)

    @property
    def as_expected(self) -> bool:
        expected = set() if self.feature is None else {self.feature}
        return set(flagged(self.version)) == expected

    def row(self) -> str:
        flags = flagged(self.version)
        if self.feature is None:
            detail = closest(self.version)
        else:
            f = by_name(self.version, self.feature)
            detail = f"{self.feature}: " + _against(f, f["flags"] or list(f["measures"]))
        outputs = _flags_text(flagged(self.version, "output"))
        label = by_name(self.version, "label")
        if label["rows"] < self.version["window"]["records"]:
            outputs += f" (label: {label['rows']:,} records; a refused row has no output)"
        return (
            f"| {self.change} | {self.sent} | {_flags_text(flags)} | {detail} | {outputs} |"
            f" {self.version['window']['records']:,} |"
            f" {'yes' if self.as_expected else '**no**'} |"
        )


# -- the run ------------------------------------------------------------------------------


@dataclass
class Servers:
    """Servers of a private copy of the demo models (``drift_bench.private_artifacts``),
    each on a fresh copy of one migrated database: each starts on an empty window."""

    folder: Path
    served: dict[str, str]
    template: Path

    @classmethod
    def make(cls, folder: Path) -> Servers:
        served = private_artifacts(folder)
        return cls(folder, served, template_database(folder, served))

    def fresh(self, name: str) -> Server:
        database = self.folder / f"{name}.sqlite3"
        shutil.copy(self.template, database)
        return Server(f"sqlite:///{database}", True, {**self.served, "DRIFT_MONITORING": "1"})


def replay(servers: Servers, threads: int) -> tuple[list[Outcome], list[str]]:
    """(i): the test split through predict, then through batch-predict."""
    frame = test_split()
    outcomes, details = [], []
    with servers.fresh("no-change") as live:
        log(f"(i) {len(frame):,} single predictions, {threads} clients")
        started = time.perf_counter()
        statuses = single_predictions(live.url, frame, threads)
        elapsed = time.perf_counter() - started
        answered = ", ".join(f"{n:,} x {status}" for status, n in sorted(statuses.items()))
        version = forest_drift(live.url)
        sent = f"{len(frame):,} single predictions ({elapsed:.0f} s): {answered}"
        outcomes.append(Outcome("none: the test split, one record a request", sent, version, None))
        details += [f"After the {len(frame):,} single predictions:", "", *feature_table(version)]
        log(f"(i) one batch-predict of {len(frame):,} rows")
        status = batch_predict(live.url, frame, servers.folder, "test-split")
        version = forest_drift(live.url)
        sent = f"one file of {len(frame):,} rows: {status}"
        outcomes.append(Outcome("none: the test split, one batch-predict", sent, version, None))
        details += ["", "After the batch-predict:", "", *feature_table(version)]
    return outcomes, details


def changes(servers: Servers, rows: int) -> list[Outcome]:
    """(ii): each change on a fresh server and database."""
    import numpy as np

    outcomes = []
    for n, change in enumerate(CHANGES):
        frame = change.change(test_split().head(rows), np.random.default_rng(n + 1))
        with servers.fresh(f"change{n}") as live:
            time.sleep(FLUSH_WAIT)  # the server's first prediction is written before the file
            log(f"(ii) {change.name}: one batch-predict of {rows:,} rows")
            status = batch_predict(live.url, frame, servers.folder, f"change{n}")
            version = forest_drift(live.url)
        expected = "" if status == change.status else f" (expected {change.status})"
        sent = f"one file of {rows:,} rows: {status}{expected}"
        outcomes.append(Outcome(change.name, sent, version, change.feature))
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", type=int, default=8, help="(i): clients in parallel")
    parser.add_argument("--rows", type=int, default=5000, help="(ii): rows of each change")
    args = parser.parse_args()
    command = " ".join(["python bench/drift_replay.py", *map(shlex.quote, sys.argv[1:])])
    if shutil.which("curl") is None:
        print("curl is not installed: apt-get install curl", file=sys.stderr)
        return 2
    if not (ARTIFACTS / "adult_reference.csv").exists():
        print(f"No demo models in {ARTIFACTS}: run `make train` first.", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="drift-replay-"))
    try:
        servers = Servers.make(folder)
        outcomes, details = replay(servers, args.threads)
        outcomes += changes(servers, args.rows)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    reference = outcomes[0].version["reference"]
    text = "\n".join(
        [
            f"`{command}` ({time.strftime('%Y-%m-%d')}; the demo random forest, its reference"
            f" {reference['file_name']} ({reference['rows']:,} rows); gunicorn with 2 workers,"
            " SQLite; a fresh database and server for each change)",
            "",
            "| change | sent, answered | inputs flagged (by) | the changed feature against"
            " its thresholds | outputs flagged (by) | window records | as expected |",
            "|---|---|---|---|---|---:|---|",
            *[o.row() for o in outcomes],
            "",
            "(i) Each feature of the window, no change (PSI and the second measure against"
            " the threshold in force; shares of the window's records):",
            "",
            *details,
        ]
    )
    print("\n" + text)
    save("drift_replay", text)
    return 0 if all(o.as_expected for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
