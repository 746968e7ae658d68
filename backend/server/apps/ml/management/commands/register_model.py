"""``manage.py register_model ARTIFACT --name NAME --version VERSION [...]``

Registers a trained artifact bundle (``make_bundle``, see README "Adding your own model") as a
new version of an endpoint. The file is copied into ``MODEL_ARTIFACTS_PATH`` and its sha256,
scikit-learn version and model card are recorded; every process of the running server loads
it from there on its next request for it (the registry loads by database id), no restart.

For operators: it runs with the server's settings and database and needs no login.
"""

from __future__ import annotations

import getpass
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import sklearn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.endpoints import selectors, services
from apps.endpoints.errors import ServiceError
from apps.endpoints.models import MLAlgorithmStatus
from apps.ml import artifacts
from apps.ml.income_classifier import WRAPPERS, IncomeClassifier

Status = MLAlgorithmStatus.Status


class Command(BaseCommand):
    help = "Register a trained model artifact as a new version of an endpoint."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # --version names the model's version here; Django's own --version (the Django
        # release) gives way to it.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("artifact", type=Path, help="the joblib bundle to register")
        parser.add_argument("--name", required=True, help='e.g. "gradient boosting"')
        parser.add_argument("--version", required=True, dest="model_version", help="e.g. 1.0.0")
        parser.add_argument("--endpoint", default="income_classifier")
        parser.add_argument(
            "--wrapper",
            default=IncomeClassifier.wrapper_key,
            choices=sorted(WRAPPERS),
            help="the class that serves it (default: %(default)s, any Adult classifier)",
        )
        # A new version takes no default traffic until an operator promotes it.
        parser.add_argument("--status", default=Status.TESTING, choices=Status.values)
        parser.add_argument("--description", default="")
        parser.add_argument("--owner", default=_user_name())
        parser.add_argument(
            "--artifact-name",
            default="",
            help="file name inside MODEL_ARTIFACTS_PATH (default: the artifact's own name)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        source: Path = options["artifact"]
        endpoint, name, version = options["endpoint"], options["name"], options["model_version"]
        self._refuse_duplicate(endpoint, name, version)
        if not source.is_file():
            raise CommandError(f"No artifact file at {source}.")
        root = Path(settings.MODEL_ARTIFACTS_PATH)
        file_name = options["artifact_name"] or source.name
        sha256 = artifacts.sha256_of(source)
        copied = _copy_into(root, source, file_name, sha256)
        try:
            # Opened from inside the artifacts folder and checked against the source's hash,
            # as every process will open it: a bad bundle is refused here, not at serving.
            wrapper = WRAPPERS[options["wrapper"]].from_artifact(root, file_name, sha256=sha256)
        except ServiceError as exc:
            if copied:
                (root / file_name).unlink()
            raise CommandError(f"Not registered: {exc.message}") from exc
        if wrapper.sklearn_version != sklearn.__version__:
            self.stderr.write(
                self.style.WARNING(
                    f"The model was saved with scikit-learn {wrapper.sklearn_version}; this server "
                    f"runs {sklearn.__version__}. Pickles are only reliable on the same version."
                )
            )
        algorithm, created = services.register_algorithm(
            endpoint_name=endpoint,
            name=name,
            version=version,
            status=options["status"],
            owner=options["owner"],
            description=options["description"],
            code="",
            wrapper=wrapper.wrapper_key,
            artifact=file_name,
            artifact_sha256=sha256,
            sklearn_version=wrapper.sklearn_version,
            features=wrapper.feature_card,
            metrics=wrapper.metrics,
            classes=wrapper.classes,
        )
        if not created:  # registered by someone else between our check and now
            self._refuse_duplicate(endpoint, name, version)
        self._warn_if_ambiguous(endpoint, options["status"], algorithm.pk)
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered algorithm {algorithm.pk}: {endpoint} / {name} {version}, status "
                f"{options['status']}, artifact {file_name} (sha256 {sha256[:12]}...)."
            )
        )
        self.stdout.write(
            f"Running servers serve it now: POST /api/v1/{endpoint}/predict"
            f"?status={options['status']}&version={version}"
        )

    @staticmethod
    def _refuse_duplicate(endpoint: str, name: str, version: str) -> None:
        existing = selectors.find_algorithm(endpoint_name=endpoint, name=name, version=version)
        if existing is not None:
            raise CommandError(
                f"Algorithm {existing.pk} is already '{name}' version '{version}' of endpoint "
                f"'{endpoint}'. A new model is a new version: pass another --version."
            )

    def _warn_if_ambiguous(self, endpoint: str, status: str, pk: int) -> None:
        others = selectors.algorithms_for_prediction(endpoint_name=endpoint, status=status)
        if len(others) > 1 and status != Status.AB_TESTING:
            ids = ", ".join(str(a.pk) for a in others if a.pk != pk)
            self.stderr.write(
                self.style.WARNING(
                    f"Algorithm(s) {ids} of '{endpoint}' also have status '{status}': predict "
                    f"without ?version= answers 400 ambiguous_algorithm until one changes status."
                )
            )


def _copy_into(root: Path, source: Path, file_name: str, sha256: str) -> bool:
    """Put ``source`` at ``root/file_name``; True when it was copied, False when the same
    file is already there. Never replaces a different file: another version may be using it."""
    try:
        target = artifacts.resolve(root, file_name)
    except ServiceError as exc:
        raise CommandError(exc.message) from exc
    if target.exists():
        if artifacts.sha256_of(target) == sha256:
            return False
        raise CommandError(
            f"A different file named '{file_name}' is already in {root}; "
            "pass --artifact-name to store this one under another name."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    shutil.copyfile(source, tmp)
    try:
        # link() fails if the name appeared meanwhile, where rename() would overwrite it.
        os.link(tmp, target)
    except FileExistsError:
        return _copy_into(root, source, file_name, sha256)  # decide again on what is there
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "operator"
