"""What feedback costs: a file of feedback against one PUT per request, and the token itself.

In process, on a database this script creates (SQLite in a temp folder; PostgreSQL in a
database it creates and drops, unless --no-postgres): N logged requests of a stub
classifier, then

- a file of N ``request_id,feedback_token,feedback`` rows through ``feedback.give_many``,
  the code behind ``POST /api/v1/feedback``: first feedback, then every value overwritten
  (each overwrite keeps a revision), then the same file again (nothing changes);
- ``feedback.give`` once per request for a sample, the code behind ``PUT
  /api/v1/mlrequests/<id>``, each in its own transaction as the API runs it;
- the token: the keyed BLAKE2b MAC against HMAC-SHA256, per token.

    .venv/bin/python bench/feedback_bench.py [--rows 100000] [--no-postgres]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import os
import random
import shlex
import sys
import tempfile
import time
import timeit
from typing import Any

from common import PG_ADMIN, REPO, UNBOUNDED, log, save, stub_algorithm

sys.path.insert(0, str(REPO / "backend" / "server"))

SINGLE_SAMPLE = 2_000


def setup_django(database_url: str) -> None:
    os.environ.update(
        UNBOUNDED,
        DJANGO_SETTINGS_MODULE="server.settings",
        DATABASE_URL=database_url,
        SECRET_KEY="feedback-bench-only",
        ML_DEMO_MODELS="0",
        LOG_LEVEL="WARNING",
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def logged_requests(n: int) -> list[int]:
    from django.db import transaction

    from apps.endpoints.serving import bulk

    algorithm = stub_algorithm(endpoint="bench", name="stub", status="production")
    row = bulk.LogRow("{}", "{}", "<=50K", None, algorithm.pk, None, None, None)
    ids: list[int] = []
    with transaction.atomic():
        for start in range(0, n, 10_000):
            ids += bulk.insert_requests([row] * min(10_000, n - start)).tolist()
    return ids


def feedback_file(ids: list[int], rng: random.Random) -> bytes:
    from apps.endpoints.serving import feedback

    tokens = feedback.tokens_for(ids)
    lines = [
        f"{pk},{token},{rng.choice(('<=50K', '>50K'))}"
        for pk, token in zip(ids, tokens, strict=True)
    ]
    return ("request_id,feedback_token,feedback\n" + "\n".join(lines) + "\n").encode()


def timed_file(data: bytes) -> tuple[float, Any]:
    from django.contrib.auth.models import AnonymousUser

    from apps.endpoints import policy
    from apps.endpoints.serving import feedback

    actor = policy.Actor(user=AnonymousUser(), address="127.0.0.1")
    started = time.perf_counter()
    result = feedback.give_many(upload=io.BytesIO(data), actor=actor)
    return time.perf_counter() - started, result


def timed_singles(ids: list[int]) -> float:
    """Seconds per ``feedback.give``, each in its own transaction (as the API runs it)."""
    from django.contrib.auth.models import AnonymousUser

    from apps.endpoints import policy
    from apps.endpoints.serving import feedback

    actor = policy.Actor(user=AnonymousUser(), address="127.0.0.1")
    tokens = feedback.tokens_for(ids)
    started = time.perf_counter()
    for pk, token in zip(ids, tokens, strict=True):
        feedback.give(request_id=pk, value=">50K", token=token, actor=actor)
    return (time.perf_counter() - started) / len(ids)


def run(name: str, database_url: str, rows: int) -> str:
    setup_django(database_url)
    from apps.endpoints.models import FeedbackRevision, MLRequest

    rng = random.Random(2026)
    log(f"{name}: {rows:,} logged requests")
    ids = logged_requests(rows + SINGLE_SAMPLE)
    file_ids, single_ids = ids[:rows], ids[rows:]
    first = feedback_file(file_ids, rng)
    first_s, result = timed_file(first)
    assert result.applied == rows and result.changed == rows, result
    # Every value flipped: each row changes and keeps a revision.
    flipped = first.replace(b",<=50K\n", b",tmp\n").replace(b",>50K\n", b",<=50K\n")
    flipped = flipped.replace(b",tmp\n", b",>50K\n")
    overwrite_s, result = timed_file(flipped)
    assert result.changed == rows and FeedbackRevision.objects.count() == rows, result
    again_s, result = timed_file(flipped)
    assert result.applied == rows and result.changed == 0, result
    log(f"{name}: {SINGLE_SAMPLE:,} single feedbacks")
    single_s = timed_singles(single_ids)
    assert MLRequest.objects.filter(feedback__isnull=False).count() == rows + SINGLE_SAMPLE
    per_row = first_s / rows
    return (
        f"| {name} | {rows:,} | {first_s:.2f} | {rows / first_s:,.0f} | {overwrite_s:.2f} | "
        f"{again_s:.2f} | {single_s * 1e3:.2f} | {single_s / per_row:.1f}x |"
    )


def token_costs() -> str:
    key = hashlib.sha256(b"k").digest()
    ids = [b"%d" % i for i in range(1, 100_001)]

    def blake() -> object:
        return [hashlib.blake2b(i, key=key, digest_size=16).hexdigest() for i in ids]

    def sha() -> object:
        return [hmac.digest(key, i, "sha256")[:16].hex() for i in ids]

    b = min(timeit.repeat(blake, number=1, repeat=5)) / len(ids)
    h = min(timeit.repeat(sha, number=1, repeat=5)) / len(ids)
    return (
        "| token | us per token |\n|---|---:|\n"
        f"| keyed BLAKE2b (used) | {b * 1e6:.2f} |\n| HMAC-SHA256 | {h * 1e6:.2f} |\n"
        f"| ratio HMAC / BLAKE2b | {h / b:.1f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.database:  # one database per process: Django is set up once
        print(run(args.database, args.url, args.rows))
        return
    command = shlex.join(["python", "bench/feedback_bench.py", *sys.argv[1:]])
    lines = []
    with tempfile.TemporaryDirectory() as folder:
        lines.append(child("SQLite", f"sqlite:///{folder}/bench.sqlite3", args.rows))
    if not args.no_postgres:
        lines.append(with_postgres(args.rows))
    table = "\n".join(
        [
            f"`{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)",
            "",
            "| database | rows | file: first feedback s | rows/s | file: all overwritten s | "
            "file: unchanged s | one PUT's work, ms | a PUT per row / the file, per row |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *lines,
            "",
            token_costs(),
        ]
    )
    print(table)
    save("feedback_bench", table)


def child(name: str, url: str, rows: int) -> str:
    import subprocess

    database = "postgresql" if url.startswith("postgres") else "sqlite"
    done = subprocess.run(
        [sys.executable, __file__, "--database", database, "--url", url, "--rows", str(rows)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        sys.exit(f"{name} run failed:\n{done.stdout}\n{done.stderr}")
    sys.stderr.write(done.stderr)
    return done.stdout.strip().splitlines()[-1].replace(f"| {database} |", f"| {name} |")


def with_postgres(rows: int) -> str:
    import psycopg

    name = f"feedback_bench_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        return child("PostgreSQL", PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", rows)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
