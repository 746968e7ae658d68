"""A worker lost for good mid-job: how long the job takes to recover, with the shipped lease.

    .venv/bin/python bench/lost_worker_bench.py [--rows 300000] [--chunk-rows 50000]
        [--quick] [--rounds 2] [--brokers redis,rabbitmq] [--kill-at 0.667]
        [--lease 30 --heartbeat 5] [--redis-db 10] [--rabbitmq-url amqp://...]
        [--timeout 900] [--keep-data]

The issue: a worker SIGKILLed (its machine gone) at 200,000 rows of a 300,000-row job; on
Redis the piece it held came back only after the broker's visibility timeout (600 s).
Now a piece being scored holds a lease in the database, renewed by its worker every
BATCH_JOB_HEARTBEAT_SECONDS, and every worker's watcher sends again, every
BATCH_JOB_HEARTBEAT_SECONDS, a piece whose lease lapsed (BATCH_JOB_LEASE_SECONDS without a
renewal; ``apps/endpoints/batch/leases.py``). Measured with the lease settings as shipped
(the environment's BATCH_JOB_LEASE_SECONDS, _HEARTBEAT_SECONDS, _CHUNK_ROWS and
_VISIBILITY_TIMEOUT are dropped): ``--lease`` and ``--heartbeat`` set other values, for a
quick run; ``--quick`` is 60,000 rows in 10,000-row pieces.

A round, for each broker (Redis: a database of its own, ``--redis-db``, whose keys this run
added are deleted at the end; RabbitMQ: a queue and exchange of the round's own, deleted at
the end): a fresh PostgreSQL database (a copy of one migrated template, dropped after the
round), a storage folder, gunicorn with the production configuration and two Celery
workers of one process each (``--concurrency 1``) on the same host, with node names of
their own: "lost" as jobs_bench's Stack starts its worker, and "kept" by the same command
at ``--loglevel INFO`` (as ``make worker``), both with DEBUG=0. Both are warmed up (small
jobs until each process has loaded the model), then a file of ``--rows`` rows
(``batch_bench.make_csv``, the other batch benchmarks' rows) is submitted with
``curl -F``. PostgreSQL is polled every 0.1 s for the job's pieces. Once ``--kill-at`` of
the rows are done (at least one piece) and a piece not done is leased by the pool process
of "lost" (a child of its main process: the pid in ``leased_by``), the whole process group
of "lost" is SIGKILLed, and not restarted. The recovery is the job's ``finished_at`` (the
API's, with the job's X-Job-Token) minus the time of the kill (one clock: same machine).

Checked each round: the job succeeded, chunks_done == chunks_total, the result has one
header and every row once, in order (the ids ``make_csv`` numbers the rows with, read
back), the lost piece is done with ``attempts`` == 2, and "kept"'s log says its watcher
sent the piece again (not the broker).

The time of a piece ("piece s"): the median, over the job's pieces, of the time from its
lease being taken (the lease's first ``lease_until`` seen, minus the lease length: exact,
as the pieces are seen within 0.1 s of their start, before a renewal) to it being seen
done (within 0.1 s): the pieces of the very job measured, on the same stack, while two
workers shared the machine's two cores. The lost piece's second attempt, scored by "kept"
alone at the end, is shown beside it. Target: recovery <= 60 s + the piece's time.
A second table shows where the recovery went, in seconds after the kill: when the lost
piece's lease lapsed (its last renewal + the lease), when a watcher claimed it (seen in
the database, or the line of "kept"'s log), when it was taken again, scored, and the job
finished (``finish``: the pieces' outputs joined). What to expect: the lease's remainder
(lease - up to one heartbeat) + up to one heartbeat for the watcher + the piece + finish.

Everything it starts (servers, workers, databases, Redis keys, RabbitMQ queues, folders)
is removed at the end, and the CSV files it had to write (unless ``--keep-data``); the
processes run in sessions of their own. The workers' and the server's logs of each round
are copied to ``bench/out/lost_worker_logs/`` (replaced at each run), for whoever wants to
see why a recovery took what it took.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from batch_bench import make_csv
from jobs_bench import WARMUP_ROWS, Broker, Databases, Stack, epoch_of

from common import OUT, REPO, SERVER, children, log, save, server_env, stop

POLL_SECONDS = 0.1
TARGET_SLACK_SECONDS = 60  # the target: recovered within 60 s + the piece's time
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
FINISHING = "finishing"  # leases.FINISHING: the holder of a done piece owing the finish
SHIPPED = (  # dropped from the environment: the service's defaults are what is measured
    "BATCH_JOB_LEASE_SECONDS",
    "BATCH_JOB_HEARTBEAT_SECONDS",
    "BATCH_JOB_CHUNK_ROWS",
    "BATCH_JOB_VISIBILITY_TIMEOUT",
    "BATCH_JOB_MAX_RETRIES",
)
LOGS = OUT / "lost_worker_logs"
CODE = [
    f"backend/server/{name}"
    for name in (
        "apps/endpoints/batch/leases.py",
        "apps/endpoints/batch/tasks.py",
        "apps/endpoints/batch/jobs.py",
        "apps/endpoints/models.py",
        "server/celery.py",
        "server/settings.py",
    )
]


# -- the brokers ---------------------------------------------------------------------------


class RabbitQueue(Broker):
    """A queue of RabbitMQ for one round, and the exchange of the same name Celery declares
    for it, deleted at the end. A ``Broker`` for jobs_bench's Stack (its url and queue);
    not a Redis database, so Broker's own set-up is not run."""

    def __init__(self, url: str, queue: str) -> None:
        from kombu.connection import Connection

        self.url, self.queue = url, queue
        with Connection(url, connect_timeout=5) as probe:  # type: ignore[no-untyped-call]
            probe.ensure_connection(max_retries=1)

    def cleanup(self) -> int:
        """Deletes the queue and its exchange; the messages the queue still held."""
        from kombu.connection import Connection

        with Connection(self.url, connect_timeout=5) as conn:  # type: ignore[no-untyped-call]
            held = conn.default_channel.queue_delete(self.queue)
            try:
                conn.default_channel.exchange_delete(self.queue)
            except Exception as exc:  # whatever kombu raises: say so, go on
                log(f"  could not delete the exchange {self.queue}: {exc}")
        return int(held or 0)


# -- the system: the web server and two workers --------------------------------------------


class TwoWorkers(Stack):
    """jobs_bench's Stack with one worker process ("lost", Stack's worker, to be killed),
    and a second Celery worker ("kept") started by the very same command, under a node name
    of its own and at ``--loglevel INFO`` (as ``make worker``: its log shows the recovery)."""

    def __init__(self, database_url: str, broker: Broker, storage: Path, logs: Path) -> None:
        self.kept: subprocess.Popen[bytes] | None = None  # before Stack waits for its pool
        super().__init__(database_url, broker, storage, 1, logs)
        command = [str(part) for part in cast("list[str]", self.worker.args)]
        name = command.index("-n") + 1
        command[name] = command[name].replace("@", "_kept@", 1)
        command[command.index("--loglevel") + 1] = "INFO"
        self.kept_log = (logs / f"worker-{self.port}-kept.log").open("wb")
        self.kept = subprocess.Popen(
            command,
            cwd=SERVER,
            env=self.env,
            stdout=self.kept_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not self.kept_pool():
                if self.kept.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the second worker did not start; see {self.kept_log.name}")
                time.sleep(0.2)
        except BaseException:
            self.close()
            raise

    def lost_pool(self) -> list[int]:
        return children(self.worker.pid)

    def kept_pool(self) -> list[int]:
        return children(self.kept.pid) if self.kept is not None else []

    def processes(self) -> list[int]:
        """Both workers' pool processes (Stack's warm-up loads the model into each)."""
        return self.lost_pool() + self.kept_pool()

    def kill_lost(self) -> float:
        """SIGKILL to the whole process group of "lost"; the time it was sent."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        killed_at = time.time()
        self.worker.wait(timeout=10)
        return killed_at

    def close(self) -> None:
        if self.kept is not None:
            stop(self.kept)
            self.kept_log.close()
        super().close()

    def keep_logs(self, prefix: str) -> list[Path]:
        LOGS.mkdir(parents=True, exist_ok=True)
        kept = []
        for source, role in [
            (self.worker_log.name, "lost"),
            (self.kept_log.name, "kept"),
            (self.server_log.name, "server"),
        ]:
            target = LOGS / f"{prefix}-{role}.log"
            shutil.copyfile(str(source), target)
            kept.append(target)
        return kept


# -- the job's pieces, seen in PostgreSQL --------------------------------------------------


@dataclass
class Piece:
    index: int
    rows: int = 0
    taken: dict[int, float] = field(default_factory=dict)  # attempt -> when it was taken
    holders: dict[int, str] = field(default_factory=dict)  # attempt -> leased_by
    claimed_at: float | None = None  # a watcher claimed its lapsed lease (seen in time)
    done_at: float | None = None  # seen done first (within POLL_SECONDS)
    attempts: int = 0
    leased_by: str = ""
    lease_until: float | None = None
    done: bool = False

    def seconds(self, attempt: int) -> float | None:
        """How long ``attempt`` took, from its lease taken to the piece seen done."""
        if self.done_at is None or attempt != self.attempts or attempt not in self.taken:
            return None
        return self.done_at - self.taken[attempt]


def pid_of(holder: str) -> int:
    """The process of a lease's holder, "host:pid:random" (leases.holder); 0 for none."""
    parts = holder.split(":")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else 0


class Tracker:
    """The pieces of one job, read from PostgreSQL at each ``sample``: when each attempt
    took its lease (its first ``lease_until`` minus the lease: the take sets it, renewals
    come a heartbeat later), when a watcher claimed it (``leased_by`` emptied), when it
    was seen done."""

    def __init__(self, database_url: str, job_id: int, lease_seconds: float) -> None:
        import psycopg

        self.conn = psycopg.connect(database_url, autocommit=True)
        self.job_id, self.lease = job_id, lease_seconds
        self.pieces: dict[int, Piece] = {}
        self.state, self.rows_done, self.chunks_done = "", 0, 0

    def sample(self) -> None:
        now = time.time()
        job = self.conn.execute(
            "SELECT state, rows_done, chunks_done FROM endpoints_batchjob WHERE id = %s",
            [self.job_id],
        ).fetchone()
        assert job is not None
        self.state, self.rows_done, self.chunks_done = job
        chunks = self.conn.execute(
            "SELECT index, done, rows, attempts, leased_by, extract(epoch FROM lease_until)::float8"
            " FROM endpoints_batchjobchunk WHERE job_id = %s",
            [self.job_id],
        ).fetchall()
        for index, done, rows, attempts, leased_by, lease_until in chunks:
            piece = self.pieces.setdefault(index, Piece(index))
            piece.rows, piece.attempts, piece.done = rows, attempts, done
            piece.leased_by, piece.lease_until = leased_by, lease_until
            held = leased_by not in ("", FINISHING) and lease_until is not None
            if held and not done and attempts not in piece.taken:
                piece.taken[attempts] = min(now, lease_until - self.lease)
                piece.holders[attempts] = leased_by
            claimed = leased_by == "" and not done and lease_until is not None
            if claimed and piece.claimed_at is None:  # the claim set lease_until
                piece.claimed_at = lease_until - self.lease
            if done and piece.done_at is None:
                piece.done_at = now

    def held_by(self, pids: list[int]) -> Piece | None:
        """A piece not done whose lease is held by one of ``pids``."""
        for piece in self.pieces.values():
            if not piece.done and piece.lease_until is not None and pid_of(piece.leased_by) in pids:
                return piece
        return None

    def close(self) -> None:
        self.conn.close()


# -- one round -----------------------------------------------------------------------------


@dataclass
class Round:
    broker: str
    number: int
    rows: int
    pieces: int = 0
    rows_at_kill: int = 0
    recovery_s: float = float("nan")
    piece_s: float = float("nan")  # the median of the job's pieces
    lost_index: int = -1
    held_s: float = float("nan")  # how long "lost" had held its piece at the kill
    lapsed_s: float = float("nan")  # after the kill: the lost piece's lease lapsed
    claimed_s: float | None = None  # a watcher claimed it
    retaken_s: float = float("nan")  # it was taken again
    rescored_s: float = float("nan")  # its second attempt took
    retaken_by: str = "-"
    done_s: float = float("nan")  # seen done
    others_done_s: float | None = None  # every other piece done ("kept" idle from then)
    problems: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return not self.problems and self.recovery_s <= TARGET_SLACK_SECONDS + self.piece_s


CLAIM_LINE = re.compile(
    r"^\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}).*Batch job (\d+): piece (\d+) lapsed"
)


def claimed_in_log(path: Path, job_id: int, index: int) -> float | None:
    """When "kept"'s watcher logged that it sent the piece again (local time, ms)."""
    for line in path.read_text(errors="replace").splitlines():
        found = CLAIM_LINE.match(line)
        if found and (int(found[3]), int(found[4])) == (job_id, index):
            stamp = time.mktime(time.strptime(found[1], "%Y-%m-%d %H:%M:%S"))
            return stamp + int(found[2]) / 1000
    return None


def check_result(stack: Stack, job: dict[str, Any], rows: int) -> str | None:
    """None if the result is one header and the rows 1..rows once each, in order (their
    first column, the id make_csv gives them); otherwise what is wrong."""
    request = urllib.request.Request(
        f"{stack.base}/batch-jobs/{job['id']}/result", headers={"X-Job-Token": job["token"]}
    )
    header, expected, tail = None, 1, b""
    with urllib.request.urlopen(request, timeout=600) as answer:
        while True:
            block = answer.read(4 * 1024 * 1024)
            lines = (tail + block).split(b"\n")
            tail = lines.pop() if block else b""
            for line in lines:
                if not line:
                    continue
                if header is None:
                    header = line
                    continue
                found = line.split(b",", 1)[0]
                if found != str(expected).encode():
                    return f"row {expected} of the result has the id {found[:20]!r}"
                expected += 1
            if not block:
                break
    if header is None or not header.startswith(b"id,"):
        return f"the result's header is {header!r}"
    return None if expected - 1 == rows else f"the result has {expected - 1} rows, not {rows}"


def run_round(
    broker_name: str,
    number: int,
    broker: Broker,
    path: Path,
    rows: int,
    kill_at: float,
    lease: float,
    timeout: float,
    dbs: Databases,
    tmp: Path,
) -> Round:
    database_url = dbs.fresh()
    storage = Path(tempfile.mkdtemp(prefix="storage-", dir=tmp))
    result = Round(broker_name, number, rows)
    stack = TwoWorkers(database_url, broker, storage, tmp)
    tracker: Tracker | None = None
    try:
        warm = stack.warm_up(make_csv(WARMUP_ROWS))
        log(f"  warm: worker processes at {[round(r / 1024) for r in warm]} MB")
        lost_pool, kept_pool = stack.lost_pool(), stack.kept_pool()
        job = stack.submit(path, False)
        result.pieces = job["chunks_total"]
        tracker = Tracker(database_url, job["id"], lease)
        kill_rows = max(1, round(rows * kill_at))
        deadline = time.monotonic() + timeout
        while True:  # until "lost" holds a piece, with kill_rows rows done
            tracker.sample()
            if tracker.state in ("succeeded", "failed", "cancelled"):
                raise RuntimeError(f"the job ended ({tracker.state}) before a moment to kill")
            victim = tracker.held_by(lost_pool)
            if victim and tracker.rows_done >= kill_rows and tracker.chunks_done >= 1:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no moment to kill within {timeout} s")
            time.sleep(POLL_SECONDS)
        assert victim is not None
        result.rows_at_kill = tracker.rows_done
        holder = victim.leased_by
        killed_at = stack.kill_lost()
        log(
            f"  killed 'lost' at {tracker.rows_done:,} rows done, holding piece {victim.index}"
            f" ({holder})"
        )
        tracker.sample()  # the lease as "lost" left it: nobody renews it any more
        result.lost_index = victim.index
        result.held_s = killed_at - victim.taken.get(victim.attempts, killed_at)
        if victim.done:
            result.problems.append("the piece was done before the kill landed")
        elif victim.lease_until is not None and victim.leased_by == holder:
            result.lapsed_s = victim.lease_until - killed_at
        deadline = time.monotonic() + timeout
        while tracker.state not in ("succeeded", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the job did not end within {timeout} s of the kill")
            time.sleep(POLL_SECONDS)
            tracker.sample()
        body = stack.get(job)
        result.recovery_s = epoch_of(body["finished_at"]) - killed_at
        durations = [  # every piece but the lost one: scored while both workers were
            s
            for p in tracker.pieces.values()
            if p is not victim and (s := p.seconds(p.attempts)) is not None
        ]
        rescored = victim.seconds(2)
        result.piece_s = statistics.median(durations) if durations else float("nan")
        if 2 in victim.taken:
            result.retaken_s = victim.taken[2] - killed_at
            pid = pid_of(victim.holders[2])
            result.retaken_by = "kept" if pid in kept_pool else f"pid {pid}"
        if rescored is not None:
            result.rescored_s = rescored
        if victim.done_at is not None:
            result.done_s = victim.done_at - killed_at
        claimed = victim.claimed_at or claimed_in_log(
            Path(stack.kept_log.name), job["id"], victim.index
        )
        result.claimed_s = None if claimed is None else claimed - killed_at
        others = [p.done_at for p in tracker.pieces.values() if p is not victim and p.done_at]
        result.others_done_s = max(others) - killed_at if others else None
        # The checks.
        if body["state"] != "succeeded":
            result.problems.append(f"job {body['state']}: {body.get('error')}")
        if body["chunks_done"] != body["chunks_total"]:
            result.problems.append(f"{body['chunks_done']} of {body['chunks_total']} pieces")
        if victim.attempts != 2:
            result.problems.append(f"the lost piece had {victim.attempts} attempts, not 2")
        if body["state"] == "succeeded" and (wrong := check_result(stack, job, rows)):
            result.problems.append(wrong)
        kept_text = Path(stack.kept_log.name).read_text(errors="replace")
        if f"piece {victim.index} lapsed" not in kept_text:
            result.problems.append("'kept' did not log sending the piece again")
        return result
    finally:
        if tracker is not None:
            tracker.close()
        stack.close()
        for kept in stack.keep_logs(f"{broker_name}-{number}"):
            log(f"  log: {kept.relative_to(REPO)}")
        dbs.drop(database_url)
        subprocess.run(["rm", "-rf", str(storage)])


# -- the report ----------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1f}"


def tables(rounds: list[Round]) -> list[str]:
    lines = [
        "| broker | round | rows | pieces | rows done at the kill | recovery s | piece s |"
        " recovery - piece s | target met (≤ 60 s + piece) | checks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rounds:
        lines.append(
            f"| {r.broker} | {r.number} | {r.rows:,} | {r.pieces} | {r.rows_at_kill:,} |"
            f" {seconds(r.recovery_s)} | {seconds(r.piece_s)} |"
            f" {seconds(r.recovery_s - r.piece_s)} |"
            f" {'**met**' if r.met else '**not met**'} |"
            f" {'; '.join(r.problems) or 'ok'} |"
        )
    lines += [
        "",
        "Where the recovery went, in seconds after the kill (the lost piece: its index, how"
        " long 'lost' had held it; the other pieces all done: 'kept' idle from then on):",
        "",
        "| broker | round | lost piece (held s) | other pieces done | lease lapsed |"
        " sent again by a watcher | taken again (by) | its 2nd attempt took s | seen done |"
        " job finished |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rounds:
        lines.append(
            f"| {r.broker} | {r.number} | {r.lost_index} ({seconds(r.held_s)}) |"
            f" {seconds(r.others_done_s)} | {seconds(r.lapsed_s)} | {seconds(r.claimed_s)} |"
            f" {seconds(r.retaken_s)} ({r.retaken_by}) | {seconds(r.rescored_s)} |"
            f" {seconds(r.done_s)} | {seconds(r.recovery_s)} |"
        )
    return lines


def code_state() -> str:
    """The commit measured, and which files of the lease's path differed from it or were
    not in it (the working tree is what runs)."""
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=all", "--", *CODE],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    names = ", ".join(Path(line[3:]).name for line in changed)
    return f"commit {head.stdout.strip()}" + (f" + uncommitted {names}" if changed else "")


# -- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--chunk-rows", type=int, help="BATCH_JOB_CHUNK_ROWS (as shipped)")
    parser.add_argument("--quick", action="store_true", help="60,000 rows, 10,000-row pieces")
    parser.add_argument("--rounds", type=int, default=2, help="per broker")
    parser.add_argument("--brokers", default="redis,rabbitmq")
    parser.add_argument("--kill-at", type=float, default=2 / 3, help="share of rows done")
    parser.add_argument("--lease", type=int, help="BATCH_JOB_LEASE_SECONDS (as shipped)")
    parser.add_argument("--heartbeat", type=float, help="BATCH_JOB_HEARTBEAT_SECONDS")
    parser.add_argument("--redis-db", type=int, default=10)
    parser.add_argument("--rabbitmq-url", default=RABBITMQ_URL)
    parser.add_argument("--timeout", type=float, default=900, help="s, to the kill and after")
    parser.add_argument("--keep-data", action="store_true", help="keep the CSV file written")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.chunk_rows = 60_000, 10_000
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    if not set(brokers) <= {"redis", "rabbitmq"}:
        parser.error("--brokers: redis, rabbitmq or both")
    command = "python bench/lost_worker_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    measured = code_state()

    for name in SHIPPED:
        if os.environ.pop(name, None) is not None:
            log(f"{name} dropped from the environment: measured as shipped")
    for name, value in [
        ("BATCH_JOB_LEASE_SECONDS", args.lease),
        ("BATCH_JOB_HEARTBEAT_SECONDS", args.heartbeat),
        ("BATCH_JOB_CHUNK_ROWS", args.chunk_rows),
    ]:
        if value is not None:
            os.environ[name] = str(value)
    # The settings the servers and workers get (the same environment): read here too.
    os.environ.update(server_env("sqlite://:memory:"), DJANGO_SETTINGS_MODULE="server.settings")
    from django.conf import settings

    lease, heartbeat = settings.BATCH_JOB_LEASE_SECONDS, settings.BATCH_JOB_HEARTBEAT_SECONDS
    chunk_rows = settings.BATCH_JOB_CHUNK_ROWS
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    log(
        f"lease {lease} s, heartbeat {heartbeat} s, pieces of {chunk_rows:,} rows,"
        f" Redis visibility timeout {visibility} s"
    )

    OUT.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(LOGS, ignore_errors=True)
    written = [
        p for p in (OUT / f"adult_{n}.csv" for n in (args.rows, WARMUP_ROWS)) if not p.exists()
    ]
    tmp = Path(tempfile.mkdtemp(prefix="lost-worker-bench-"))
    dbs: Databases | None = None
    redis: Broker | None = None
    rounds: list[Round] = []

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        path = make_csv(args.rows)
        make_csv(WARMUP_ROWS)
        dbs = Databases(None, server_env(""))
        for broker_name in brokers:
            for number in range(1, args.rounds + 1):
                queue = f"lost_worker_bench_{os.getpid()}_{broker_name}_{number}"
                broker: Broker
                if broker_name == "redis":
                    redis = redis or Broker(args.redis_db)
                    redis.queue = queue  # a queue of the round's own
                    broker = redis
                else:
                    broker = RabbitQueue(args.rabbitmq_url, queue)
                log(f"{broker_name}, round {number}: {args.rows:,} rows")
                try:
                    result = run_round(
                        broker_name,
                        number,
                        broker,
                        path,
                        args.rows,
                        args.kill_at,
                        lease,
                        args.timeout,
                        dbs,
                        tmp,
                    )
                finally:
                    if isinstance(broker, RabbitQueue):
                        broker.cleanup()
                rounds.append(result)
                log(
                    f"  recovered in {result.recovery_s:.1f} s (piece {result.piece_s:.1f} s):"
                    f" target {'met' if result.met else 'not met'};"
                    f" {'; '.join(result.problems) or 'checks ok'}"
                )
    finally:
        if dbs is not None:
            dbs.drop_all()
        removed = redis.cleanup() if redis is not None else 0
        log(f"cleaned up: databases, {removed} Redis keys, RabbitMQ queues, {tmp}")
        subprocess.run(["rm", "-rf", str(tmp)])
        if not args.keep_data:
            for p in written:
                p.unlink(missing_ok=True)

    if code_state() != measured:
        measured += f" (at the end: {code_state()})"
    lines = [
        f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {measured};"
        f" PostgreSQL; two workers of one process each, one SIGKILLed for good;"
        f" BATCH_JOB_LEASE_SECONDS={lease}, BATCH_JOB_HEARTBEAT_SECONDS={heartbeat:g},"
        f" BATCH_JOB_CHUNK_ROWS={chunk_rows:,}, Redis visibility timeout {visibility} s)",
        "",
        *tables(rounds),
        "",
        f"Expected: the lease's remainder (≤ {lease} s) + up to {heartbeat:g} s for a watcher"
        " + the piece + the finish.",
    ]
    table = "\n".join(lines)
    print("\n" + table)
    save("lost_worker", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
