"""``manage.py release [--no-migrate]``: what must happen before workers start.

Applies migrations and collects the static files whitenoise serves, in one process: each
Django start-up imports pandas and scikit-learn, which takes seconds on a small machine.

Static files are collected only when they changed since the last release into the same
``STATIC_ROOT`` (``static_fingerprint``: every source file's path, size and mtime, and the
storage): whitenoise compresses all 20 MB of them every time, most of it the API
viewer's source maps, which took seconds on each start of a server whose files were the
same as at its last start (issue 30).

On PostgreSQL, migrations run under a session advisory lock: hosts started together on one
database (a fresh deployment, a rolling upgrade) migrate one after the other. Without it
two hosts raced through the same migrations and one crashed (``relation
"django_content_type" already exists``). The host that waits finds nothing left to do. A
session lock rather than a transaction's: each migration commits on its own, and a host
that dies mid-way lets go of the lock with its connection.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from hashlib import sha256
from pathlib import Path
from typing import Any, cast

from django.apps import apps as django_apps
from django.conf import settings
from django.contrib.staticfiles import finders
from django.contrib.staticfiles.apps import StaticFilesConfig
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser, OutputWrapper
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

# Derived from a name, fixed forever: hosts of two releases must exclude each other too.
MIGRATION_LOCK = int.from_bytes(sha256(b"ml_pipeline.migrate").digest()[:8], "big", signed=True)


@contextmanager
def migration_lock(stdout: OutputWrapper) -> Iterator[None]:
    """Hold the migration lock on the connection ``migrate`` uses (the default one) while
    the block runs; nothing on SQLite, which serves one machine."""
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK])
        if not cursor.fetchone()[0]:
            stdout.write("Another host is applying migrations: waiting for it to finish.")
            cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])

    def unlock() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])

    try:
        yield
    except BaseException:
        # The migration's error is the one to see. A connection that cannot run the unlock
        # either lost its session (and the lock with it) or closes as this process exits.
        with suppress(DatabaseError):
            unlock()
        raise
    unlock()


FINGERPRINT_FILE = ".release-fingerprint"


def static_fingerprint() -> str:
    """What collectstatic would make from: each file the finders find (its path in
    STATIC_ROOT, size and modification time), the storage that post-processes them, and
    the versions of the packages that do."""
    from importlib.metadata import version

    digest = sha256()
    digest.update(repr(settings.STORAGES.get("staticfiles")).encode())
    digest.update(f"whitenoise {version('whitenoise')}".encode())
    entries = []
    config = django_apps.get_app_config("staticfiles")
    ignored = cast(StaticFilesConfig, config).ignore_patterns  # what collectstatic ignores
    for finder in finders.get_finders():
        for path, storage in finder.list(ignored):
            prefix = getattr(storage, "prefix", None) or ""
            stat = os.stat(storage.path(path))
            entries.append(f"{os.path.join(prefix, path)}\t{stat.st_size}\t{stat.st_mtime_ns}")
    for entry in sorted(entries):
        digest.update(entry.encode() + b"\n")
    return digest.hexdigest()


def collect_static(stdout: OutputWrapper) -> None:
    """collectstatic, unless STATIC_ROOT holds what it would make (see the module doc)."""
    root = Path(settings.STATIC_ROOT)
    marker = root / FINGERPRINT_FILE
    fingerprint = static_fingerprint()
    if marker.is_file() and marker.read_text().strip() == fingerprint:
        stdout.write("Static files unchanged since the last release: not collected again.")
        return
    marker.unlink(missing_ok=True)  # a collect cut short must not look complete
    call_command("collectstatic", interactive=False, verbosity=0)
    marker.write_text(fingerprint + "\n")


class Command(BaseCommand):
    help = "Apply migrations and collect static files before the server starts."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-migrate",
            action="store_true",
            help="only collect static files (migrations run once elsewhere)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["no_migrate"]:
            with migration_lock(self.stdout):
                call_command("migrate", interactive=False, verbosity=options["verbosity"])
        collect_static(self.stdout)
        self.stdout.write("Release ready: migrations applied, static files up to date.")
