"""The catalogue's writes: registering model versions and changing their statuses.

``register_model`` is the one way a model file enters the catalogue, whoever brings it:
``manage.py register_model`` (operators on the host), ``POST /api/v1/mlalgorithms`` and the
admin's upload form (staff), and the demo models (``demo.py``). It checks the file before
anything is recorded (``apps.ml.intake``), stores it in the artifacts folder under a name
the catalogue records with its sha256, and writes the algorithm and its first status in
one transaction. On any refusal nothing is left behind: no row, no file.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction

from apps.core.errors import Conflict, InvalidInput, ModelUnavailable, PayloadTooLarge, ServiceError
from apps.endpoints.catalogue.selectors import find_algorithm, forget_selections
from apps.endpoints.catalogue.statuses import check_status
from apps.endpoints.models import DriftReference, Endpoint, MLAlgorithm, MLAlgorithmStatus
from apps.endpoints.monitoring import references
from apps.ml import artifacts, compiled, intake, kinds, shared_store

Status = MLAlgorithmStatus.Status
_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,128}")
# An input example is a few rows of CSV, read whole into memory.
MAX_EXAMPLE_BYTES = 1024 * 1024


@dataclass
class Registered:
    algorithm: MLAlgorithm
    notes: list[str] = field(default_factory=list)  # warnings for whoever registered it


def register_model(
    *,
    artifact: Path | IO[bytes],
    endpoint_name: str,
    name: str,
    version: str,
    status: str = Status.TESTING,
    description: str = "",
    owner: str = "",
    created_by: str = "",
    file_name: str = "",
    example: bytes | None = None,
    target_column: str = "",
    allow_pickle: bool = False,
    kind: str | None = None,
    classes: Sequence[str] = (),
    reference: bytes | None = None,
    reference_name: str = "",
    reference_source: str = DriftReference.Source.REFERENCE,
) -> Registered:
    """Check a model file and record it as ``version`` of endpoint ``endpoint_name`` (made
    on first use), with ``status``.

    ``artifact``: a path on this host (the management command, the demo models), copied
    into the artifacts folder as ``file_name`` (default: its own name); or an uploaded
    file, stored under a name made of its sha256. ``allow_pickle``: whether a joblib file
    may be loaded (operators on the host; uploads only with ``ALLOW_PICKLE_UPLOADS``).
    ``kind``: a key of ``apps.ml.kinds`` (default: found from the file); ``classes``: a
    classifier's, where its file does not store them (LightGBM's and XGBoost's own formats).
    ``reference``: a CSV sample of the inputs the model was made for, whose profile drift
    monitoring compares live traffic with (``monitoring/references.py``; without one, the
    input example if it is large enough).
    Raises ``InvalidInput``/``ModelRejected`` (400) or ``Conflict`` (409)."""
    _check_identity(endpoint_name=endpoint_name, name=name, version=version, status=status)
    _refuse_duplicate(endpoint_name, name, version)
    root = Path(settings.MODEL_ARTIFACTS_PATH)
    with _registering(root):
        return _register_placed(
            root,
            artifact,
            file_name,
            endpoint_name=endpoint_name,
            name=name,
            version=version,
            status=status,
            description=description,
            owner=owner,
            created_by=created_by,
            example=example,
            target_column=target_column,
            allow_pickle=allow_pickle,
            kind=kind,
            classes=classes,
            reference=reference,
            reference_name=reference_name,
            reference_source=reference_source,
        )


@contextmanager
def _registering(root: Path) -> Iterator[None]:
    """One registration at a time in this host's artifacts folder, from placing the file
    to recording it (or taking it back). Two uploads of the same bytes share one
    content-addressed file: the one that created it and then lost the race to record it
    deleted the file the winner's version names (predict and /readyz answered 503).
    Registrations are an operator's occasional act; a lock file serialises them across
    the processes of the host."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".registering.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _register_placed(
    root: Path,
    artifact: Path | IO[bytes],
    file_name: str,
    *,
    endpoint_name: str,
    name: str,
    version: str,
    status: str,
    description: str,
    owner: str,
    created_by: str,
    example: bytes | None,
    target_column: str,
    allow_pickle: bool,
    kind: str | None,
    classes: Sequence[str],
    reference: bytes | None,
    reference_name: str,
    reference_source: str,
) -> Registered:
    path, sha256, created = _place(root, artifact, file_name)
    try:
        found = intake.inspect(
            path,
            sha256=sha256,
            trusted=settings.SKOPS_TRUSTED_TYPES,
            allow_pickle=allow_pickle,
            example=example,
            target_column=target_column or None,
            compile=settings.ML_COMPILED_INFERENCE,
            kind=kind,
            classes=classes,
            # Every file, the command's too: an operator registering a large model on the
            # host raises the limit for that run rather than every upload.
            max_unpacked=settings.MODEL_MAX_UNPACKED_BYTES,
        )
        profile = _reference_profile(
            found, reference, reference_name, reference_source, example, target_column
        )
        serving = dict(found.serving)
        onnx_bytes = serving.pop("onnx_bytes", None)
        if onnx_bytes is not None:
            compiled.write_generic(path, sha256, onnx_bytes)
        artifact_name = path.relative_to(root.resolve()).as_posix()
        _refuse_other_bytes_under(artifact_name, sha256)
        if shared_store.configured():  # before the catalogue names it: every host finds it
            _push(path, artifact_name, sha256)
        algorithm = _record(
            endpoint_name=endpoint_name,
            name=name,
            version=version,
            status=status,
            owner=owner or created_by,
            created_by=created_by or owner,
            description=description,
            artifact=artifact_name,
            sha256=sha256,
            found=found,
            serving=serving,
            target_column=target_column,
            profile=profile,
        )
    except BaseException:
        # Only a file this call created, and that no version names (the lock above makes
        # "created" mean no other registration is using it).
        if created and not _named_by_a_version(sha256):
            _remove(path, sha256)
        raise
    notes = [*found.notes, *([profile.note] if profile is not None and profile.note else [])]
    return Registered(algorithm, notes)


def _reference_profile(
    found: intake.Intake,
    reference: bytes | None,
    reference_name: str,
    source: str,
    example: bytes | None,
    target_column: str,
) -> references.Built | None:
    """The version's drift reference: the reference file, else the input example when it
    has ``DRIFT_MIN_EXAMPLE_ROWS`` rows; None when there is neither."""
    if reference is not None:
        return references.build(
            reference,
            found.runtime,
            source=source,
            file_name=reference_name,
            target_column=target_column,
        )
    if example is not None:
        try:
            built = references.build(
                example,
                found.runtime,
                source=DriftReference.Source.EXAMPLE,
                target_column=target_column,
                minimum=settings.DRIFT_MIN_EXAMPLE_ROWS,
            )
        except ServiceError as exc:  # the example was checked for its first rows only
            return references.Built(
                None, 0, "", note=f"No reference profile from the input example: {exc.message}"
            )
        if built.profile is not None:
            return built
    return None  # the card says drift is not computed; no note for the usual case


def _named_by_a_version(sha256: str) -> bool:
    """Whether a version names these bytes; when that cannot be told (the database is
    away), assume so: a file left behind costs disk, a file taken away costs a model."""
    try:
        return MLAlgorithm.objects.filter(artifact_sha256=sha256).exists()
    except DatabaseError:
        return True


def register_upload(
    *,
    upload: IO[bytes],
    file_name: str,
    example: IO[bytes] | None,
    user: str,
    reference: IO[bytes] | None = None,
    reference_name: str = "",
    **identity: Any,
) -> Registered:
    """A model uploaded over HTTP or in the admin by ``user`` (its owner), with its input
    example; a pickle only with ``ALLOW_PICKLE_UPLOADS``. ``identity``: ``endpoint_name``,
    ``name``, ``version``, ``status``, ``description``, ``target_column``.

    The sizes are checked here, for the API and the admin's form alike: the file against
    ``MODEL_MAX_UPLOAD_BYTES``, the example (read into memory) against
    ``MAX_EXAMPLE_BYTES``."""
    limit = settings.MODEL_MAX_UPLOAD_BYTES
    if upload.seek(0, io.SEEK_END) > limit:
        raise PayloadTooLarge(f"The file is larger than {limit} bytes (MODEL_MAX_UPLOAD_BYTES).")
    upload.seek(0)
    sample = None
    if example is not None:
        sample = example.read(MAX_EXAMPLE_BYTES + 1)
        if len(sample) > MAX_EXAMPLE_BYTES:
            raise PayloadTooLarge(
                f"The input example is larger than {MAX_EXAMPLE_BYTES} bytes; a few rows do."
            )
    return register_model(
        artifact=upload,
        file_name=file_name,
        owner=user,
        created_by=user,
        example=sample,
        allow_pickle=settings.ALLOW_PICKLE_UPLOADS,
        reference=None if reference is None else read_reference(reference),
        reference_name=reference_name,
        **identity,
    )


def read_reference(upload: IO[bytes]) -> bytes:
    """An uploaded reference file, whole (a profile needs every row), up to
    ``DRIFT_REFERENCE_MAX_BYTES``."""
    limit = settings.DRIFT_REFERENCE_MAX_BYTES
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(
            f"The reference file is larger than {limit} bytes (DRIFT_REFERENCE_MAX_BYTES)."
        )
    return data


def _check_identity(*, endpoint_name: str, name: str, version: str, status: str) -> None:
    check_status(status)
    problems = {}
    if not _SLUG.fullmatch(endpoint_name):
        problems["endpoint"] = ["Letters, digits, - and _ only (it is part of the URL)."]
    for key, value in (("name", name), ("version", version)):
        if not value.strip() or len(value) > 128:
            problems[key] = ["Between 1 and 128 characters."]
    if problems:
        first = next(iter(problems))
        raise InvalidInput(f"{first}: {problems[first][0]}", details=problems)


def _refuse_duplicate(endpoint_name: str, name: str, version: str) -> None:
    existing = find_algorithm(endpoint_name=endpoint_name, name=name, version=version)
    if existing is not None:
        raise Conflict(
            f"Algorithm {existing.pk} is already '{name}' version '{version}' of endpoint "
            f"'{endpoint_name}'. A new model is a new version.",
            details={"version": ["This endpoint already has this name and version."]},
        )


def _record(
    *,
    endpoint_name: str,
    name: str,
    version: str,
    status: str,
    owner: str,
    created_by: str,
    description: str,
    artifact: str,
    sha256: str,
    found: intake.Intake,
    serving: Mapping[str, Any],
    target_column: str,
    profile: references.Built | None = None,
) -> MLAlgorithm:
    card = found.signature.card()
    try:
        with transaction.atomic():
            endpoint, _ = Endpoint.objects.get_or_create(
                name=endpoint_name, defaults={"owner": owner}
            )
            algorithm = MLAlgorithm.objects.create(
                parent_endpoint=endpoint,
                name=name,
                version=version,
                owner=owner,
                description=description,
                code="",
                wrapper=found.kind,
                artifact=artifact,
                artifact_sha256=sha256,
                sklearn_version=found.sklearn_version,
                features=card["features"],
                task=card["task"],
                classes=card["classes"],
                outputs=card["outputs"],
                metrics=dict(found.metrics),
                example=found.example,
                serving=dict(serving),
                target_column=target_column,
            )
            MLAlgorithmStatus.objects.create(
                status=status, active=True, created_by=created_by, parent_mlalgorithm=algorithm
            )
            if profile is not None:
                references.store(algorithm, profile, created_by=created_by)
    except IntegrityError:  # registered by another process between the check and now
        _refuse_duplicate(endpoint_name, name, version)
        raise
    forget_selections()
    transaction.on_commit(forget_selections)
    return algorithm


# -- the file ----------------------------------------------------------------------------


def _place(root: Path, artifact: Path | IO[bytes], file_name: str) -> tuple[Path, str, bool]:
    """Put the model file in ``root``; returns its path, its sha256 and whether this call
    created it (False: the same bytes were already there, perhaps another version's)."""
    root.mkdir(parents=True, exist_ok=True)
    if isinstance(artifact, Path):
        if not artifact.is_file():
            raise InvalidInput(f"No model file at {artifact}.")
        sha256 = artifacts.sha256_of(artifact)
        return _copy_into(root, artifact, file_name or artifact.name, sha256)
    return _store_upload(root, artifact, file_name)


def _copy_into(root: Path, source: Path, file_name: str, sha256: str) -> tuple[Path, str, bool]:
    """``source`` at ``root/file_name``. Never replaces a different file: another version
    may be using it."""
    try:
        target = artifacts.resolve(root, file_name)
    except ServiceError as exc:
        raise InvalidInput(exc.message) from exc
    if target.exists():
        # The demo models are registered from the folder itself: one file, hashed once.
        if target.samefile(source) or artifacts.sha256_of(target) == sha256:
            return target, sha256, False
        raise InvalidInput(
            f"A different file named '{file_name}' is already in the artifacts folder; store "
            "this one under another name (--artifact-name)."
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
    return target, sha256, True


def _store_upload(root: Path, upload: IO[bytes], original: str) -> tuple[Path, str, bool]:
    """An uploaded file, under a name made of its sha256 (``uploads/<sha256>.skops``): two
    uploads never collide, and the same bytes uploaded twice are one file."""
    folder = root / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".upload-{uuid.uuid4().hex}.tmp"
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            upload.seek(0)
            while chunk := upload.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        sha256 = digest.hexdigest()
        # The suffix says how it is read: skops, a library's own format, else joblib.
        target = folder / f"{sha256}{kinds.stored_suffix(original)}"
        try:
            os.link(tmp, target)
        except FileExistsError:
            return target, sha256, False  # the same bytes: same name, same content
        return target, sha256, True
    finally:
        tmp.unlink(missing_ok=True)


def _refuse_other_bytes_under(artifact_name: str, sha256: str) -> None:
    """One name, one file, across hosts: another host may hold a different file under this
    name (its local folder is not this one's), and would serve it for this version."""
    if MLAlgorithm.objects.filter(artifact=artifact_name).exclude(artifact_sha256=sha256).exists():
        raise InvalidInput(
            f"Another version's model file is registered as '{artifact_name}'; store this one "
            "under another name (--artifact-name)."
        )


def _push(path: Path, artifact_name: str, sha256: str) -> None:
    try:
        shared_store.push(path, artifact_name, sha256)
    except OSError as exc:
        raise ModelUnavailable(
            f"The model file could not be stored in the shared model storage ({exc}); "
            "nothing was registered."
        ) from exc


def _remove(path: Path, sha256: str) -> None:
    """A file this registration placed, and any compiled form made from it."""
    path.unlink(missing_ok=True)
    compiled.remove_cached(path, sha256)
