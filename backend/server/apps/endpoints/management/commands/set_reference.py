"""``manage.py set_reference REFERENCE --endpoint E --name N --version V``

Adds or renews a registered version's drift reference from a CSV of its features (after an
accepted change in the world, or for a version registered without one). The profile it
replaces stays in the version's history; the window starts over, since its records are
codes of the old profile's bins (docs/drift.md). The same as
``POST /api/v1/mlalgorithms/<id>/reference``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.core.errors import ServiceError
from apps.endpoints.catalogue.selectors import find_algorithm
from apps.endpoints.monitoring import references


class Command(BaseCommand):
    help = "Add or renew a version's drift reference from a CSV file of its features."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # --version names the model's version, as in register_model.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("reference", type=Path, help="a CSV of the model's feature columns")
        parser.add_argument("--endpoint", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--version", required=True, dest="model_version")
        parser.add_argument("--by", default="", help="who adds it (shown in its history)")

    def handle(self, *args: Any, **options: Any) -> None:
        endpoint, name, version = options["endpoint"], options["name"], options["model_version"]
        algorithm = find_algorithm(endpoint_name=endpoint, name=name, version=version)
        if algorithm is None:
            raise CommandError(f"No version '{name} {version}' of endpoint '{endpoint}'.")
        path: Path = options["reference"]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read the reference file: {exc.strerror}.") from exc
        try:
            reference, built = references.renew(
                algorithm, data, file_name=path.name, created_by=options["by"]
            )
        except ServiceError as exc:
            raise CommandError(f"Not set: {exc.message}") from exc
        assert reference is not None
        profile = built.profile
        described = len(profile.features) if profile is not None else 0
        self.stdout.write(
            self.style.SUCCESS(
                f"Reference {reference.pk} of algorithm {algorithm.pk} ({endpoint} / {name} "
                f"{version}): {reference.rows} rows, {described} features and outputs "
                "profiled. Its drift window starts over."
            )
        )
