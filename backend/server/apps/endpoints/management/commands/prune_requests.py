"""``manage.py prune_requests [--days N] [--batch-size N] [--archive] [--pause S]
[--revision-days N]``: delete the request log's rows older than N days
(``MLREQUEST_RETENTION_DAYS`` by default), in batches, never a row of a running A/B test;
with ``--archive``, each batch is first saved as a gzipped CSV in the ``log_archive``
storage (``retention.py``). First, replaced feedback values older than ``--revision-days``
(``FEEDBACK_REVISION_RETENTION_DAYS``, 90, by default; 0 keeps them).

Where ``celery -A server beat`` runs (``make beat``), the ``prune_requests`` task does the
same once a day when MLREQUEST_RETENTION_DAYS is set; without a beat, from cron:

    45 3 * * *  cd /srv/ml_pipeline && .venv/bin/python backend/server/manage.py prune_requests
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.endpoints.serving import retention


class Command(BaseCommand):
    help = (
        "Delete request log rows older than --days days (MLREQUEST_RETENTION_DAYS by default), "
        "in batches, keeping the rows of running A/B tests."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=None)
        parser.add_argument("--batch-size", type=int, default=10_000)
        parser.add_argument(
            "--archive",
            action="store_true",
            default=None,
            help="Save each batch as gzipped CSV in the log_archive storage before deleting "
            "it (default MLREQUEST_ARCHIVE).",
        )
        parser.add_argument(
            "--pause", type=float, default=0.0, help="Seconds to wait between batches."
        )
        parser.add_argument(
            "--revision-days",
            type=int,
            default=None,
            help="Delete replaced feedback values older than this many days "
            "(default FEEDBACK_REVISION_RETENTION_DAYS; 0 keeps them).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days: int = (
            settings.MLREQUEST_RETENTION_DAYS if options["days"] is None else options["days"]
        )
        revision_days: int = (
            settings.FEEDBACK_REVISION_RETENTION_DAYS
            if options["revision_days"] is None
            else options["revision_days"]
        )
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be 1 or more.")
        if revision_days >= 1:
            gone = retention.prune_revisions(days=revision_days, batch_size=options["batch_size"])
            self.stdout.write(
                f"Deleted {gone:,} feedback revisions replaced more than {revision_days} days ago."
            )
        if days < 1:
            if revision_days >= 1:
                self.stdout.write("Kept every request (MLREQUEST_RETENTION_DAYS is 0).")
                return
            raise CommandError(
                "Give --days (1 or more), or set MLREQUEST_RETENTION_DAYS: "
                "0, its default, keeps every row."
            )
        archive = settings.MLREQUEST_ARCHIVE if options["archive"] is None else True

        def report(done: retention.Pruned) -> None:
            self.stdout.write(
                f"batch {done.batches}: {done.deleted:,} rows deleted so far "
                f"({done.rows_per_second:,.0f} rows/s)"
            )

        done = retention.prune(
            days=days,
            batch_size=options["batch_size"],
            archive=archive,
            pause=options["pause"],
            report=report,
        )
        archived = f", archived in {len(done.archived)} files" if archive else ""
        self.stdout.write(
            f"Deleted {done.deleted:,} requests older than {days} days in "
            f"{done.seconds:.1f} s{archived}."
        )
