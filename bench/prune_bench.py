"""Retention's cost to predictions: ``manage.py prune_requests`` at several paces, each on
its own copy of one filled log, while a client predicts at 1 connection.

    .venv/bin/python bench/prune_bench.py [--rows 3000000] [--rounds 1]

Needs PostgreSQL (``PG_ADMIN``, a superuser: the WAL-compression variant sets a
superuser parameter). The log is filled once, as ``bench/log_scale.py`` fills it (rows over
90 days, one in ten with feedback), into a template database; each variant then runs on a
fresh copy of it (``CREATE DATABASE ... TEMPLATE``, a file copy), so that every variant
deletes the same rows from the same pages. Per variant: bin/serve (2 workers) on the copy,
10 s of one-row predictions at 1 connection (the "before"), then ``prune_requests --days
N`` (N: the middle row's age, so about half the rows go) while the client predicts on
(the "during"); the prune's rows/s (its own count and time), predict p50/p99 before and
during, and the WAL written per deleted row and checkpoints meanwhile (pg_stat_bgwriter).

Variants (``VARIANTS``): the default; pauses between batches (a lower pace); smaller
batches; the prune's commits asynchronous; its WAL compressed. Ratios within one run are
the numbers to compare. Every database it makes is dropped at the end, also on an error.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from log_scale import (
    RequestLog,
    Service,
    app_env,
    commit,
    manage,
    predicting,
    psql,
    quantile,
)

from common import PG_ADMIN, SERVER, log, save, stop

PG_HOST = PG_ADMIN.rsplit("/", 1)[0]


@dataclass(frozen=True)
class Variant:
    name: str
    args: tuple[str, ...] = ()  # to prune_requests
    env: tuple[tuple[str, str], ...] = ()  # the prune's
    service_env: tuple[tuple[str, str], ...] = ()  # bin/serve's
    # A control: this command runs instead of the prune ({folder}: a scratch folder).
    control: tuple[str, ...] = ()


CONTROL_SECONDS = 8
_BUSY = f"import time\nt = time.monotonic() + {CONTROL_SECONDS}\nwhile time.monotonic() < t: pass"


VARIANTS = (
    Variant("default (10k-row batches, no pause)"),
    Variant("--pause 0.05", ("--pause", "0.05")),
    Variant("--pause 0.2", ("--pause", "0.2")),
    Variant("--batch-size 2000", ("--batch-size", "2000")),
    Variant(
        "asynchronous commits (DB_SYNCHRONOUS_COMMIT=off)", (), (("DB_SYNCHRONOUS_COMMIT", "off"),)
    ),
    Variant("WAL compressed (wal_compression=lz4)", (), (("PGOPTIONS", "-c wal_compression=lz4"),)),
    Variant(
        "predictions' commits asynchronous (service DB_SYNCHRONOUS_COMMIT=off)",
        service_env=(("DB_SYNCHRONOUS_COMMIT", "off"),),
    ),
    Variant("control: nothing (the noise floor)", control=("sleep", str(CONTROL_SECONDS))),
    Variant("control: one core busy, no database", control=(sys.executable, "-c", _BUSY)),
    Variant(
        "control: 1 GB written and synced, no database",
        control=(
            "dd",
            "if=/dev/zero",
            "of={folder}/written",
            "bs=8M",
            "count=128",
            "conv=fdatasync",
        ),
    ),
)


@dataclass(frozen=True)
class Result:
    variant: Variant
    rows_per_second: float
    before: list[float]
    during: list[float]
    wal_per_row: float
    checkpoints: int
    errors: int


def fill_template(name: str, rows: int) -> int:
    """The template's log, ``rows`` rows; the prune's --days (about half of them go)."""
    psql(f"CREATE DATABASE {name}")
    env = app_env(f"{PG_HOST}/{name}")
    manage(env, "migrate", "-v0")
    the_log = RequestLog(f"{PG_HOST}/{name}", rows, datetime.now(UTC))
    try:
        the_log.grow(rows, env)
        age = datetime.now(UTC) - the_log.middle()
    finally:
        the_log.conn.close()
    return max(1, round(age / timedelta(days=1)))


def run(variant: Variant, template: str, days: int, folder: Path, before_s: float) -> Result:
    name = f"{template}_copy"
    psql(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
    url = f"{PG_HOST}/{name}"
    env = app_env(url)
    try:
        service_env = dict(env, **dict(variant.service_env))
        with Service(service_env, folder) as service, psycopg.connect(url, autocommit=True) as db:
            db.execute("CHECKPOINT")  # every variant starts with nothing dirty
            before: list[float] = []
            errors: list[int] = []
            stopping = threading.Event()
            client = threading.Thread(
                target=predicting, args=(service.port, stopping, before, errors), daemon=True
            )
            client.start()
            time.sleep(before_s)
            stopping.set()
            client.join()

            during: list[float] = []
            stopping = threading.Event()
            client = threading.Thread(
                target=predicting, args=(service.port, stopping, during, errors), daemon=True
            )
            lsn = db.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
            checkpoints = db.execute(_CHECKPOINTS).fetchone()[0]  # type: ignore[index]
            output = folder / "prune.log"
            with output.open("wb") as out:
                command = [a.format(folder=folder) for a in variant.control] or [
                    sys.executable,
                    "manage.py",
                    "prune_requests",
                    "--days",
                    str(days),
                    *variant.args,
                ]
                prune = subprocess.Popen(
                    command,
                    cwd=SERVER,
                    env=dict(env, **dict(variant.env)),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                client.start()
                code = prune.wait()
            finally:
                stopping.set()
                client.join()
                stop(prune)
            wal = db.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [lsn])
            wal_bytes = float(wal.fetchone()[0])  # type: ignore[index]
            checkpoints = db.execute(_CHECKPOINTS).fetchone()[0] - checkpoints  # type: ignore[index]
        text = output.read_text()
        if variant.control:
            if code != 0:
                raise RuntimeError(f"the control failed ({code}):\n{text[-3000:]}")
            return Result(
                variant, math.nan, before, during, math.nan, int(checkpoints), len(errors)
            )
        said = re.search(r"Deleted ([\d,]+) requests older than \d+ days in ([\d.]+) s", text)
        if code != 0 or said is None:
            raise RuntimeError(f"prune_requests failed ({code}):\n{text[-3000:]}")
        deleted, seconds = int(said.group(1).replace(",", "")), float(said.group(2))
        return Result(
            variant,
            deleted / seconds,
            before,
            during,
            wal_bytes / max(deleted, 1),
            int(checkpoints),
            len(errors),
        )
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def count(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.0f}"


_CHECKPOINTS = "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--before-seconds", type=float, default=10.0)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only the variants whose name contains this text (repeatable)",
    )
    args = parser.parse_args()
    command = shlex.join(["python", "bench/prune_bench.py", *sys.argv[1:]])
    template = f"prune_bench_{os.getpid()}"
    began = time.monotonic()
    code = commit()
    results: list[Result] = []
    try:
        log(f"filling {args.rows:,} rows into a template database")
        days = fill_template(template, args.rows)
        with tempfile.TemporaryDirectory(prefix="prune-bench-") as folder:
            for round_ in range(args.rounds):
                for variant in [v for v in VARIANTS if any(o in v.name for o in args.only or [""])]:
                    log(f"round {round_ + 1}: {variant.name}")
                    result = run(variant, template, days, Path(folder), args.before_seconds)
                    p99 = [quantile(r, 0.99) for r in (result.before, result.during)]
                    rate = result.rows_per_second
                    log(f"  {count(rate)} rows/s; p99 {p99[0]:.2f} -> {p99[1]:.2f} ms")
                    results.append(result)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            psql(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
    minutes = (time.monotonic() - began) / 60
    rows = []
    for r in results:
        p99_before, p99_during = quantile(r.before, 0.99), quantile(r.during, 0.99)
        rows.append(
            f"| {r.variant.name} | {count(r.rows_per_second)} | {quantile(r.before, 0.5):.2f} |"
            f" {quantile(r.during, 0.5):.2f} | {p99_before:.2f} | {p99_during:.2f} |"
            f" {p99_during / p99_before:.2f} | {count(r.wal_per_row)} | {r.checkpoints} |"
            f" {r.errors} |"
        )
    table = "\n".join(
        [
            f"`{command}` ({time.strftime('%Y-%m-%d')}, commit {code}, {os.cpu_count()} cores,"
            f" half of a {args.rows:,}-row log pruned per variant, each on a copy of the same"
            f" database; predict at 1 connection; the run took {minutes:.0f} min)",
            "",
            "| prune variant | rows/s | predict p50 before, ms | p50 during | p99 before |"
            " p99 during | p99 during / before | WAL bytes per row | checkpoints | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    print("\n" + table)
    save("prune_bench", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
