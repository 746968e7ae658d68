"""``manage.py delete_old_jobs [--days N]``: delete batch jobs that ended (succeeded, failed
or cancelled) more than N days ago, ``BATCH_JOB_RETENTION_DAYS`` (7) by default, with their
files in the ``batch_jobs`` storage (``jobs.delete_old``). Queued and running jobs are
kept, however old. A succeeded job's log rows stay: they are predictions served.

Where ``celery -A server beat`` runs (``make beat``), the ``delete_old_jobs`` task does the
same once a day (``CELERY_BEAT_SCHEDULE``); without it, run this daily from cron.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.endpoints.batch import jobs


class Command(BaseCommand):
    help = (
        "Delete batch jobs that ended more than --days days ago (BATCH_JOB_RETENTION_DAYS by "
        "default), with their files."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help="Keep jobs that ended within this many days "
            f"(default BATCH_JOB_RETENTION_DAYS, now {settings.BATCH_JOB_RETENTION_DAYS}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days: int = (
            settings.BATCH_JOB_RETENTION_DAYS if options["days"] is None else options["days"]
        )
        if days < 0:
            raise CommandError("--days must be 0 or more.")
        deleted = jobs.delete_old(days)
        self.stdout.write(
            f"Deleted {deleted} batch job{'s' if deleted != 1 else ''} that ended more than "
            f"{days} day{'s' if days != 1 else ''} ago."
        )
