"""``manage.py release [--no-migrate]``: what must happen before workers start.

Applies migrations and collects the static files whitenoise serves, in one process: each
Django start-up imports pandas and scikit-learn, which takes seconds on a small machine.
"""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser


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
            call_command("migrate", interactive=False, verbosity=options["verbosity"])
        call_command("collectstatic", interactive=False, verbosity=0)
        self.stdout.write("Release ready: migrations applied, static files collected.")
