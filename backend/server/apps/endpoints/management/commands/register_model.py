"""``manage.py register_model ARTIFACT --endpoint E --name N --version V [...]``

Registers a fitted scikit-learn estimator or pipeline, saved with ``joblib.dump`` or
``skops.io.dump`` (``.skops``), as a new version of an endpoint (created on first use). The
file is checked first (it loads, predicts on its input example or a generated row), then
copied into ``MODEL_ARTIFACTS_PATH`` and recorded with its sha256 and signature; every
process of a running server serves it on its next request for it, no restart
(``register_model``: the same path as the HTTP upload and the admin's).

For operators: it runs with the server's settings and database, needs no login, and takes
joblib files as well as .skops (a pickle runs code when loaded: only register your own).
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.core.errors import ServiceError
from apps.endpoints.catalogue.register import register_model
from apps.endpoints.catalogue.selectors import algorithms_for_prediction
from apps.endpoints.models import MLAlgorithmStatus
from apps.ml import kinds

Status = MLAlgorithmStatus.Status


class Command(BaseCommand):
    help = "Register a fitted scikit-learn model file as a new version of an endpoint."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # --version names the model's version here; Django's own --version (the Django
        # release) gives way to it.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("artifact", type=Path, help="a .joblib or .skops file")
        parser.add_argument("--endpoint", required=True, help="e.g. churn (made on first use)")
        parser.add_argument("--name", required=True, help='e.g. "gradient boosting"')
        parser.add_argument("--version", required=True, dest="model_version", help="e.g. 1.0.0")
        # A new version takes no default traffic until an operator promotes it.
        parser.add_argument("--status", default=Status.TESTING, choices=Status.values)
        parser.add_argument(
            "--input-example",
            type=Path,
            help="a CSV of a few input rows: the feature types, which may be missing, and "
            "the rows the model is checked on",
        )
        parser.add_argument(
            "--reference",
            type=Path,
            help="a CSV sample of the inputs the model was made for (e.g. its training "
            "features): drift monitoring's reference (docs/drift.md)",
        )
        parser.add_argument(
            "--target-column",
            default="",
            help="the column of the input example (and of batch files) with the true value",
        )
        parser.add_argument("--description", default="")
        parser.add_argument("--owner", default=_user_name())
        parser.add_argument(
            "--artifact-name",
            default="",
            help="file name inside MODEL_ARTIFACTS_PATH (default: the artifact's own name)",
        )
        parser.add_argument(
            "--kind",
            "--wrapper",  # its name before kinds were a table
            dest="kind",
            choices=kinds.keys(),
            help="the kind of model (default: found from the file): "
            + "; ".join(f"{kind.key}: {kind.summary}" for kind in kinds.KINDS),
        )
        parser.add_argument(
            "--classes",
            default="",
            help="a classifier's classes, comma-separated in the model's order, for a file "
            "in a library's own format that does not store them (LightGBM, XGBoost)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        endpoint, name, version = options["endpoint"], options["name"], options["model_version"]
        example_path: Path | None = options["input_example"]
        reference_path: Path | None = options["reference"]
        try:
            example = example_path.read_bytes() if example_path else None
        except OSError as exc:
            raise CommandError(f"Cannot read the input example: {exc.strerror}.") from exc
        try:
            reference = reference_path.read_bytes() if reference_path else None
        except OSError as exc:
            raise CommandError(f"Cannot read the reference file: {exc.strerror}.") from exc
        try:
            registered = register_model(
                artifact=options["artifact"],
                file_name=options["artifact_name"],
                endpoint_name=endpoint,
                name=name,
                version=version,
                status=options["status"],
                description=options["description"],
                owner=options["owner"],
                created_by=options["owner"],
                example=example,
                target_column=options["target_column"],
                allow_pickle=True,  # operators on the host register their own files
                kind=options["kind"],
                classes=[c.strip() for c in options["classes"].split(",") if c.strip()],
                reference=reference,
                reference_name=reference_path.name if reference_path else "",
            )
        except ServiceError as exc:
            raise CommandError(f"Not registered: {exc.message}") from exc
        for note in registered.notes:
            self.stderr.write(self.style.WARNING(note))
        algorithm = registered.algorithm
        self._warn_if_ambiguous(endpoint, options["status"], algorithm.pk)
        features = ", ".join(f"{f['name']} ({f['type']})" for f in algorithm.features[:8])
        more = f", ... ({len(algorithm.features)} in all)" if len(algorithm.features) > 8 else ""
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered algorithm {algorithm.pk}: {endpoint} / {name} {version}, status "
                f"{options['status']}, a {algorithm.task} model served by "
                f"{algorithm.serving.get('engine', '?')}, artifact {algorithm.artifact} "
                f"(sha256 {algorithm.artifact_sha256[:12]}...)."
            )
        )
        self.stdout.write(f"Features: {features}{more}")
        self.stdout.write(f"Engine: {algorithm.serving.get('reason', '')}")
        self.stdout.write(
            f"Running servers serve it now: POST /api/v1/{endpoint}/predict"
            f"?status={options['status']}&version={version}"
        )

    def _warn_if_ambiguous(self, endpoint: str, status: str, pk: int) -> None:
        others = algorithms_for_prediction(endpoint_name=endpoint, status=status)
        if len(others) > 1 and status != Status.AB_TESTING:
            ids = ", ".join(str(a.pk) for a in others if a.pk != pk)
            self.stderr.write(
                self.style.WARNING(
                    f"Algorithm(s) {ids} of '{endpoint}' also have status '{status}': predict "
                    "without ?version= answers 400 ambiguous_algorithm until one changes status."
                )
            )


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "operator"
