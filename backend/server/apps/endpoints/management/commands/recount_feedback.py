"""``manage.py recount_feedback``: rebuild the feedback tally that /metrics reads, and the
running A/B tests' arms that their sequences read, from the request log (``tally.recount``).

The tally is kept in the transaction of every feedback write, so it needs no rebuilding in
normal operation. Run it after feedback was written by something that does not keep it:
workers of a release older than the tally still serving while migration 0007 ran, or rows
changed in the database by hand. It scans the log once (seconds per million rows) while
feedback writes wait.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand

from apps.endpoints.serving import tally


class Command(BaseCommand):
    help = "Rebuild the feedback tally (the feedback counts of /metrics) from the request log."

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.perf_counter()
        corrected = tally.recount()
        seconds = time.perf_counter() - started
        if corrected:
            self.stdout.write(
                f"Feedback tally rebuilt in {seconds:.1f} s: corrected the counts of "
                f"{corrected} algorithm{'s' if corrected != 1 else ''} or running A/B test "
                f"arm{'s' if corrected != 1 else ''}."
            )
        else:
            self.stdout.write(f"Feedback tally rebuilt in {seconds:.1f} s: it was right.")
