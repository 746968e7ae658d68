"""What a shadow costs production: one-row predict with no shadow, with a shadow of 10 % of
the traffic and with one of 100 %, in one run.

    .venv/bin/python bench/shadow_bench.py [--seconds 10] [--rounds 3] [--postgres]

Needs wrk (Debian: ``apt-get install wrk``). gunicorn with the production configuration
(``server/gunicorn.conf.py``: 2 workers of 4 threads, compiled models; ``Server`` of
predict_bench.py) on a fresh SQLite database, and with ``--postgres`` on a fresh PostgreSQL
database too (made at postgres://postgres@127.0.0.1:5432 and dropped at the end).
Production is the Adult demo random forest; the shadow's candidate is the same file
registered again as another version of the endpoint (``testing``): a model of the same
cost, so the shadow's work per copy is production's model call and a write.

Each variant starts its own shadow (``POST /api/v1/shadows`` as a staff user holding
``endpoints.add_shadow``) and stops it when done; the variants take turns in an order that
turns round each round, over ``--rounds`` rounds (the two cores drift: each variant sees
early and late moments). Per variant: a warm-up of 3 s at 8 connections (each worker sees
a new shadow once its ``PREDICT_CACHE_SECONDS`` cache expires, and loads the candidate on
its first copy), a wait until the shadow's counters stop moving (copies still queued are
scored before anything is measured), then ``--seconds`` at 1 and at 8 connections, each
followed by the same wait. Reported: req/s, p50, p99 (medians of the rounds) and their
ratio or difference to no shadow; the workers' CPU per request from the start of a
measurement until its copies were written (the shadow's work after the answer included);
and from the shadow's row, read before and after each measurement, the copies scored,
dropped and failed, against the requests wrk sent.

gunicorn's output goes to a file per database; its warnings and errors are counted and
the first of them quoted under the table.

The machine may be shared: each measurement reports the cores busy outside this
benchmark's processes meanwhile ("other load", from /proc/stat less what this process,
its children, gunicorn and PostgreSQL used). With ``--quiet-below CORES`` each
measurement first waits (``--quiet-wait`` s at most) until that load is below CORES.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs_bench import machine_busy
from predict_bench import (
    _PG_CREATED,
    PATH,
    Server,
    _pg,
    _postgres_pids,
    lua_script,
    records,
    wrk,
)

from common import ARTIFACTS, OUT, PG_ADMIN, cpu_of, log, save

VARIANTS: tuple[tuple[str, float], ...] = (
    ("no shadow", 0.0),
    ("shadow, share 10 %", 0.1),
    ("shadow, share 100 %", 1.0),
)
BASE = VARIANTS[0][0]
CONNECTIONS = (1, 8)
WARM_UP_SECONDS = 3
# The shadow's counters unchanged this long: its queue is empty (a copy is written within
# milliseconds of the previous one while there are any).
QUIET_SECONDS = 1.0
CANDIDATE_VERSION = "0.0.1-shadow-bench"
USER = "shadow-bench"

# Run by `manage.py shell -c` on the server's database before gunicorn starts: the
# candidate (production's file as another version) and a staff user who may start, read
# and stop shadows, with a token.
SETUP = f"""
from pathlib import Path
from django.conf import settings
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from apps.endpoints.catalogue import demo
from apps.endpoints.catalogue.register import register_model

assert demo.ensure_registered(), "the demo models are not registered"
candidate = register_model(
    artifact=Path(settings.MODEL_ARTIFACTS_PATH) / "random_forest.joblib",
    endpoint_name="income_classifier",
    name="random forest",
    version="{CANDIDATE_VERSION}",
    status="testing",
    description="production's file again: a shadow of the same cost (bench/shadow_bench.py)",
    created_by="{USER}",
    target_column="income",
    allow_pickle=True,
).algorithm
user = User.objects.create(username="{USER}", is_staff=True)
user.user_permissions.add(
    *Permission.objects.filter(
        content_type__app_label="endpoints",
        codename__in=["add_shadow", "change_shadow", "view_shadow"],
    )
)
print("SHADOW_BENCH", candidate.pk, Token.objects.create(user=user).key)
"""


@dataclass
class Run:
    """One wrk measurement of a variant and what the shadow did meanwhile."""

    wrk: dict[str, float]
    cpu_ms: float  # the workers' CPU per request, until the copies were written
    other: float  # cores busy outside this benchmark's processes meanwhile (other users)
    copies: int = 0
    dropped: int = 0
    failed: int = 0


@dataclass
class Result:
    runs: dict[tuple[str, int], list[Run]] = field(default_factory=dict)
    shadows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # last comparisons
    log_lines: list[str] = field(default_factory=list)  # gunicorn's warnings and errors
    log_path: Path | None = None


class Api:
    """The service's REST API with the staff user's token."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            json.dumps(body).encode() if body is not None else None,
            {"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def counters(self, shadow_id: int) -> dict[str, int]:
        comparison = self.call("GET", f"/api/v1/shadows/{shadow_id}")["comparison"]
        return {k: int(comparison[k]) for k in ("copies", "dropped", "failed")}

    def settle(self, shadow_id: int, timeout: float = 180) -> dict[str, int]:
        """The shadow's counters once they stopped moving: every copy made so far written
        (or dropped, or failed)."""
        deadline = time.monotonic() + timeout
        last = self.counters(shadow_id)
        still_since = time.monotonic()
        while time.monotonic() - still_since < QUIET_SECONDS:
            if time.monotonic() > deadline:
                raise RuntimeError(f"shadow {shadow_id}: copies still written after {timeout} s")
            time.sleep(0.2)
            now = self.counters(shadow_id)
            if now != last:
                last, still_since = now, time.monotonic()
        return last


@contextmanager
def output_to(path: Path) -> Iterator[None]:
    """This process's stdout and stderr go to ``path`` (appended) for the block: what it
    starts meanwhile (gunicorn) keeps writing there."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with path.open("ab") as file:
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def setup(server: Server) -> tuple[int, str]:
    """The candidate's id and the staff user's token, on the server's database."""
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SETUP],
        cwd=server.server_dir,
        env=server.env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"setup failed:\n{done.stderr[-3000:]}")
    [line] = [line for line in done.stdout.splitlines() if line.startswith("SHADOW_BENCH ")]
    _, candidate, token = line.split()
    return int(candidate), token


def cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_of(pid) or 0.0 for pid in pids)


class OtherLoad:
    """The cores busy outside this benchmark (its own process, the children it waited for
    such as wrk, gunicorn, and PostgreSQL's processes, any database's, when ``pids`` name
    them): the machine is shared, and another user's tests show up as noise here."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.started = time.monotonic()
        self.busy, self.own = machine_busy(), self.own_seconds()

    def own_seconds(self) -> float:
        used = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            used += usage.ru_utime + usage.ru_stime
        return used + cpu_seconds(self.pids)

    def cores(self) -> float:
        busy, own = machine_busy() - self.busy, self.own_seconds() - self.own
        return max(busy - own, 0.0) / (time.monotonic() - self.started)


def wait_for_quiet(pids: list[int], below: float, timeout: float) -> float:
    """Wait until the other load over a second is below ``below`` cores, ``timeout`` s at
    most; the last second's other load."""
    deadline = time.monotonic() + timeout
    while True:
        other = OtherLoad(pids)
        time.sleep(1)
        cores = other.cores()
        if cores < below or time.monotonic() > deadline:
            return cores


def measure(
    db_name: str,
    database_url: str,
    script: Path,
    args: argparse.Namespace,
    tmp: Path,
) -> Result:
    seconds, rounds = args.seconds, args.rounds
    result = Result()
    server = Server(
        database_url,
        True,
        # No rates on the management API (polled between measurements), whatever the
        # caller's environment says.
        {"MANAGEMENT_THROTTLE_RATE": "", "PREDICT_THROTTLE_RATE": ""},
    )
    candidate, token = setup(server)
    # Kept in bench/out/ (not committed) for whoever reads a warning quoted in the table.
    server_log = OUT / f"shadow_bench-gunicorn-{db_name}.log"
    OUT.mkdir(parents=True, exist_ok=True)
    server_log.unlink(missing_ok=True)
    with ExitStack() as stack:
        with output_to(server_log):
            stack.enter_context(server)
        log(f"{db_name}: gunicorn on {server.url}, log in {server_log}; candidate {candidate}")
        api = Api(server.url, token)
        for round_ in range(rounds):
            turn = round_ % len(VARIANTS)
            for variant, share in VARIANTS[turn:] + VARIANTS[:turn]:
                shadow_id = None
                if share:
                    started = api.call(
                        "POST", "/api/v1/shadows", {"candidate": candidate, "share": share}
                    )
                    shadow_id = int(started["id"])
                # Steady state: each worker sees the shadow (or its end) and has loaded the
                # candidate; then whatever the warm-up queued is written first.
                wrk(server.url, script, 8, WARM_UP_SECONDS)
                before = api.settle(shadow_id) if shadow_id else {}
                for connections in CONNECTIONS:
                    log(f"{db_name}, round {round_ + 1}: {variant}, {connections} connection(s)")
                    workers = server.worker_pids()
                    own = [server.process.pid, *workers]
                    if database_url.startswith("postgres"):
                        own += _postgres_pids()
                    if args.quiet_below is not None:
                        wait_for_quiet(own, args.quiet_below, args.quiet_wait)
                    cpu, other = cpu_seconds(workers), OtherLoad(own)
                    measured = wrk(server.url, script, connections, seconds)
                    other_cores = other.cores()
                    after = api.settle(shadow_id) if shadow_id else {}
                    run = Run(
                        measured,
                        (cpu_seconds(workers) - cpu) * 1000 / max(measured["requests"], 1),
                        other_cores,
                        **{k: after[k] - before[k] for k in after},
                    )
                    before = after
                    result.runs.setdefault((variant, connections), []).append(run)
                if shadow_id:
                    shown = api.call("GET", f"/api/v1/shadows/{shadow_id}")
                    result.shadows.setdefault(variant, []).append(shown["comparison"])
                    api.call("POST", f"/api/v1/shadows/{shadow_id}/stop")
    # Log lines, and each traceback's last line (the exception and its message).
    result.log_path = server_log
    result.log_lines = [
        line
        for line in server_log.read_text(errors="replace").splitlines()
        if any(word in line for word in ("WARNING", "ERROR", "CRITICAL"))
        or re.match(r"[\w.]+(Error|Exception|Timeout|Warning)\b", line)
    ]
    return result


def report(db_name: str, result: Result) -> list[str]:
    def median(variant: str, connections: int, key: str) -> float:
        runs = result.runs[(variant, connections)]
        return statistics.median(
            getattr(r, key) if key in ("cpu_ms", "other") else r.wrk[key] for r in runs
        )

    def total(variant: str, connections: int, key: str) -> int:
        return sum(
            int(r.wrk[key]) if key in r.wrk else int(getattr(r, key))
            for r in result.runs[(variant, connections)]
        )

    rows = []
    for connections in CONNECTIONS:
        for variant, share in VARIANTS:
            rps, p50, p99 = (median(variant, connections, k) for k in ("rps", "p50", "p99"))
            requests = total(variant, connections, "requests")
            if share:
                copies, dropped, failed = (
                    total(variant, connections, k) for k in ("copies", "dropped", "failed")
                )
                shadow = (
                    f" {copies:,} | {dropped:,} | {failed:,} |"
                    f" {(copies + dropped + failed) / requests:.1%} |"
                )
            else:
                shadow = " | | | |"
            rows.append(
                f"| {db_name} | {variant} | {connections} | {rps:,.0f} |"
                f" {rps / median(BASE, connections, 'rps'):.3f} |"
                f" {p50:.2f} | {p50 - median(BASE, connections, 'p50'):+.2f} |"
                f" {p99:.2f} | {p99 - median(BASE, connections, 'p99'):+.2f} |"
                f" {median(variant, connections, 'cpu_ms'):.2f} |"
                f" {median(variant, connections, 'other'):.2f} |"
                f" {requests:,} |{shadow} {total(variant, connections, 'errors')} |"
            )
    lines = [
        "| database | variant | conn. | req/s | / no shadow | p50 ms | Δ p50 | p99 ms | Δ p99 |"
        " worker CPU ms/req | other load, cores | requests | copies scored | dropped | failed |"
        " copied / requests | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"{db_name}, each round against its own no-shadow run (Δ p50 / Δ p99 ms [other load,"
        " cores], rounds in order):",
    ]
    for connections in CONNECTIONS:
        base = result.runs[(BASE, connections)]
        spread = [r.wrk["p50"] for r in base]
        p99s = ", ".join(f"{r.wrk['p99']:.2f} [{r.other:.2f}]" for r in base)
        lines.append(
            f"- {connections} conn., no shadow: p50 {', '.join(f'{x:.2f}' for x in spread)}"
            f" (spread {max(spread) - min(spread):.2f}); p99 {p99s}"
        )
        for variant, share in VARIANTS:
            if share:
                runs = result.runs[(variant, connections)]
                deltas = ", ".join(
                    f"{r.wrk['p50'] - b.wrk['p50']:+.2f} / {r.wrk['p99'] - b.wrk['p99']:+.2f}"
                    f" [{r.other:.2f}]"
                    for r, b in zip(runs, base, strict=True)
                )
                lines.append(f"- {connections} conn., {variant}: {deltas}")
    for variant, share in VARIANTS:
        if share:
            seen = result.shadows[variant]
            agreed = [c["agreement"]["rate"] for c in seen if c["agreement"]["rate"] is not None]
            ms = [c["latency_ms"] for c in seen if c["latency_ms"]["shadow"] is not None]
            lines.append(
                f"- {variant}: the shadow's own comparison (median of {len(seen)} shadows):"
                f" agreement {statistics.median(agreed):.1%},"
                f" ms per copy: production {statistics.median(m['production'] for m in ms):.2f}"
                f" (scoring and logging), shadow {statistics.median(m['shadow'] for m in ms):.2f}"
                " (scoring)"
                if agreed and ms
                else f"- {variant}: no copy scored"
            )
    lines.append(
        "- copied / requests exceeds the share by up to one request per connection: wrk"
        " does not count the requests in flight when it stops; the server answers and copies"
        " them"
    )
    lines.append(
        f"- gunicorn's log ({result.log_path}): {len(result.log_lines)} warning/error line(s)"
        + "".join(f"\n  - `{line[:300]}`" for line in result.log_lines[:8])
    )
    return lines


def targets(db_name: str, result: Result) -> list[str]:
    """The targets, each difference estimated twice: between the variants' medians, and as
    the median of each round's difference to that round's no-shadow run (the rounds
    alternate, so this one is paired in time). A verdict only where both agree."""

    def median(variant: str, connections: int, key: str) -> float:
        return statistics.median(r.wrk[key] for r in result.runs[(variant, connections)])

    def paired(variant: str, connections: int, key: str) -> float:
        runs, base = result.runs[(variant, connections)], result.runs[(BASE, connections)]
        return statistics.median(
            r.wrk[key] - b.wrk[key] if key != "rps" else r.wrk[key] / b.wrk[key] - 1
            for r, b in zip(runs, base, strict=True)
        )

    def delta(variant: str, key: str, target: float | None = None) -> str:
        of_medians, of_rounds = (
            median(variant, 1, key) - median(BASE, 1, key),
            paired(variant, 1, key),
        )
        text = f"Δ {key} {of_medians:+.2f} ms (rounds: {of_rounds:+.2f})"
        if target is None:
            return text
        verdict = (
            "met"
            if max(of_medians, of_rounds) <= target
            else "missed"
            if min(of_medians, of_rounds) > target
            else "not shown: the two estimates disagree"
        )
        return f"{text}, target ≤ {target}: {verdict}"

    [(_, _), (ten, _), (full, _)] = VARIANTS
    lines = [
        f"- {db_name}, 1 connection, 10 %: {delta(ten, 'p50', 0.1)}; {delta(ten, 'p99', 0.5)}",
        f"- {db_name}, 1 connection, 100 %: {delta(full, 'p50')}, {delta(full, 'p99')},"
        f" req/s x{median(full, 1, 'rps') / median(BASE, 1, 'rps'):.3f}",
    ]
    base = median(BASE, 8, "rps")
    costs = ", ".join(
        f"{share:.0%}: {median(variant, 8, 'rps') - base:+,.0f} req/s"
        f" ({median(variant, 8, 'rps') / base - 1:+.1%}; rounds: {paired(variant, 8, 'rps'):+.1%})"
        for variant, share in VARIANTS
        if share
    )
    lines.append(f"- {db_name}, 8 connections, req/s against no shadow ({base:,.0f}): {costs}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--postgres", action="store_true", help=f"PostgreSQL too (needs {PG_ADMIN}, trust auth)"
    )
    parser.add_argument(
        "--quiet-below",
        type=float,
        metavar="CORES",
        help="before each measurement, wait until other users' load is below CORES"
        " (the machine is shared; default: measure at once, the load is reported)",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=60, help="seconds to wait for quiet, at most"
    )
    args = parser.parse_args()
    command = shlex.join(["python", "bench/shadow_bench.py", *sys.argv[1:]])
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    if not (ARTIFACTS / "random_forest.joblib").exists():
        print(f"No demo models in {ARTIFACTS}: make -C {ARTIFACTS.parent.parent}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="shadow-bench-"))
    script = lua_script(records(), tmp)
    databases = [("SQLite", f"sqlite:///{tmp / 'db.sqlite3'}")]
    results: dict[str, Result] = {}
    try:
        if args.postgres:
            databases.append(("PostgreSQL", _pg(1)))
        for db_name, url in databases:
            results[db_name] = measure(db_name, url, script, args, tmp)
    finally:
        for name in _PG_CREATED:
            subprocess.run(
                ["psql", "-q", PG_ADMIN, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"]
            )
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load generator: wrk;"
        f" POST {PATH}, one record; gunicorn 2 workers x 4 threads, compiled; production and"
        f" candidate the same random forest; median of {args.rounds} alternating rounds of"
        f" {args.seconds} s; Δ in ms against no shadow; copies, requests and errors summed"
        " over the rounds)",
        "",
    ]
    for db_name, result in results.items():
        lines += [*report(db_name, result), ""]
    lines.append("Targets (Δ between the medians; rounds: the median of each round's own Δ):")
    for db_name, result in results.items():
        lines += targets(db_name, result)
    table = "\n".join(lines)
    print("\n" + table)
    save("shadow_bench", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
