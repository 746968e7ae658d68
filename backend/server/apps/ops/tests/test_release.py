"""``manage.py release`` when several hosts start at once on one PostgreSQL database: each
migrates under a session advisory lock, so one host applies the migrations and the others
wait for it, then find nothing to do. Unlocked, two hosts raced through the same
migrations and one crashed (``relation "django_content_type" already exists``, ``column
... already exists``, ``MigrationSchemaMissing``).

- release waits while another session holds the lock, and goes on when it is released;
- a failed migrate lets the lock go (the next host to start is not stuck behind it);
- live: two ``bin/serve`` hosts started together on a fresh database both become ready.

SQLite serves one machine: nothing to race, and no lock is taken.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import LazySettings
from django.core.management import call_command
from django.db import connection, connections

from apps.ops.tests.live_server import current_database_url, halt, launch

# The lock's key: every host of every release must use the same one (hosts of two
# releases, in a rolling upgrade, must exclude each other too). sha256 of
# "ml_pipeline.migrate", its first 8 bytes as a signed integer (PostgreSQL's bigint).
MIGRATION_LOCK = -1692147643157188828


@pytest.fixture
def postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the lock is PostgreSQL's; a SQLite file serves one machine, no race")


def session(dbname: str | None = None) -> Any:
    """A connection of its own to the test database's server, as another host has
    (``dbname``: another database there)."""
    import psycopg

    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        dbname=dbname or db["NAME"],
        autocommit=True,
    )


def waiting_for_the_lock(observer: Any) -> bool:
    """Whether a session of this database waits for the migration lock."""
    rows = observer.execute(
        "SELECT count(*) FROM pg_locks JOIN pg_database d ON d.oid = database"
        " WHERE locktype = 'advisory' AND NOT granted AND d.datname = current_database()"
        " AND ((classid::bigint << 32) | objid::bigint) = %s",
        [MIGRATION_LOCK],  # the shift wraps into the sign bit, as the key's does
    ).fetchone()
    return bool(rows[0])


def release_in_a_thread() -> tuple[threading.Thread, list[BaseException | None]]:
    """``manage.py release`` on a thread (a connection of its own); the list gets None when
    it succeeded, else its exception."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call_command("release", stdout=io.StringIO())
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.django_db(transaction=True)
def test_release_waits_while_another_host_holds_the_migration_lock(
    postgresql: None, settings: LazySettings, tmp_path: Path
) -> None:
    settings.STATIC_ROOT = tmp_path / "static"
    with closing(session()) as other_host, closing(session()) as observer:
        other_host.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
        thread, outcome = release_in_a_thread()
        deadline = time.monotonic() + 30
        while thread.is_alive() and not waiting_for_the_lock(observer):
            assert time.monotonic() < deadline, "release neither waited nor finished"
            time.sleep(0.05)
        assert thread.is_alive() and outcome == [], f"release did not wait: {outcome}"
        time.sleep(0.5)
        assert thread.is_alive() and waiting_for_the_lock(observer)  # still waiting

        other_host.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])
        thread.join(timeout=60)
        assert outcome == [None]
        # ...and release let the lock go: another host takes it at once.
        assert other_host.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK]).fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_failed_migrate_lets_the_migration_lock_go(
    postgresql: None, settings: LazySettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.ops.management.commands import release

    settings.STATIC_ROOT = tmp_path / "static"

    def failing(name: str, *args: Any, **options: Any) -> None:
        if name == "migrate":
            raise RuntimeError("a migration failed")
        call_command(name, *args, **options)

    monkeypatch.setattr(release, "call_command", failing)
    with pytest.raises(RuntimeError, match="a migration failed"):
        call_command("release", stdout=io.StringIO())
    with closing(session()) as other_host:
        assert other_host.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK]).fetchone()[0]


def test_the_lock_key_never_changes() -> None:
    from apps.ops.management.commands import release

    assert release.MIGRATION_LOCK == MIGRATION_LOCK


# -- live: two hosts at once on a fresh database -------------------------------------------


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database on the test database's server, dropped afterwards."""
    from psycopg import sql

    name = f"{connection.settings_dict['NAME']}_fresh_{uuid.uuid4().hex[:8]}"
    with closing(session("postgres")) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield current_database_url(name)
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_two_hosts_started_together_on_a_fresh_database_both_become_ready(
    postgresql: None, tmp_path: Path
) -> None:
    with fresh_database() as database_url, ExitStack() as stack:
        hosts = []
        for name in ("a", "b"):  # started back to back: their migrations meet
            (tmp_path / name / "models").mkdir(parents=True)
            host = launch(tmp_path / name / "models", tmp_path / name, database_url)
            stack.callback(halt, host)
            hosts.append(host)
        for host in hosts:
            host.wait_until_alive(host.process)
        for host in hosts:
            status, _, body = host.call("GET", "/readyz")
            assert status == 200 and json.loads(body)["status"] == "ready", body
        # One host applied the migrations; the other found nothing left to do.
        logs = [host.log.read_text() for host in hosts]
        applied = ["Applying contenttypes.0001_initial" in log for log in logs]
        assert sorted(applied) == [False, True], logs
        assert all("Release ready" in log for log in logs), logs


def test_static_files_are_collected_again_only_when_they_changed(
    settings: LazySettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """whitenoise compresses every file on every collect (seconds per start, for 20 MB that
    were the same as at the last start): release skips it while the sources' paths, sizes
    and times are those of the last collect into the same STATIC_ROOT."""
    from apps.ops.management.commands import release

    settings.STATIC_ROOT = str(tmp_path / "static")
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "site.css").write_text("body { color: black }")
    # Only these files: the installed packages' 20 MB take seconds to compress each time.
    settings.STATICFILES_DIRS = [str(sources)]
    settings.STATICFILES_FINDERS = ["django.contrib.staticfiles.finders.FileSystemFinder"]
    collected: list[int] = []
    real = call_command  # the one release imported

    def counting(name: str, *args: Any, **options: Any) -> Any:
        if name == "collectstatic":
            collected.append(1)
        return real(name, *args, **options)

    monkeypatch.setattr(release, "call_command", counting)

    def run() -> str:
        out = io.StringIO()
        call_command("release", "--no-migrate", stdout=out)
        return out.getvalue()

    run()
    assert len(collected) == 1 and (tmp_path / "static/site.css").is_file()
    assert "not collected again" in run() and len(collected) == 1
    # A file added (say, by an upgrade of a package that ships static files).
    (sources / "app.js").write_text("console.log(1)")
    run()
    assert len(collected) == 2 and (tmp_path / "static/app.js").is_file()
    assert "not collected again" in run() and len(collected) == 2
    # A file changed in place: another modification time.
    source = sources / "site.css"
    os.utime(source, ns=(0, source.stat().st_mtime_ns + 1_000_000_000))
    run()
    assert len(collected) == 3


@pytest.mark.django_db(transaction=True)
def test_the_release_runs_beside_the_master_that_the_workers_are_forked_from(
    demo_artifacts: Path, tmp_path: Path
) -> None:
    """bin/serve releases as gunicorn reads its configuration, in a child of the master:
    migrating registers the demo models and checks them with ONNX Runtime, whose threads
    must not be in the process the workers are forked from (a worker forked from such a
    master hung at exit for the whole graceful timeout). The master keeps one thread,
    and the server stops at once on SIGTERM."""
    import signal
    import subprocess

    running = launch(demo_artifacts, tmp_path, ML_DEMO_MODELS="1", ML_COMPILED_INFERENCE="1")
    try:
        running.wait_until_alive(running.process)
        status, _, body = running.call("POST", "/api/v1/income_classifier/predict", {"age": 30})
        assert status == 200, body
        assert "Release ready" in running.log.read_text()
        from apps.endpoints.models import MLAlgorithm

        assert MLAlgorithm.objects.filter(name="random forest").exists()  # registered
        master = running.process.pid  # bin/serve execs gunicorn
        assert len(list(Path(f"/proc/{master}/task").iterdir())) == 1
        started = time.monotonic()
        os.killpg(master, signal.SIGTERM)
        try:
            running.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not stop within 15 s of SIGTERM")
        assert time.monotonic() - started < 15
    finally:
        halt(running)
