"""Catalogue rows for tests, without going through a registry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apps.endpoints.catalogue.register import register_model
from apps.endpoints.models import MLAlgorithm, MLRequest
from apps.ml.registry import MLRegistry


def algorithm(
    registry: MLRegistry,
    *,
    name: str = "random forest",
    version: str = "0.0.1",
    status: str = "production",
    endpoint: str = "income_classifier",
    artifact: str = "random_forest.joblib",
) -> MLAlgorithm:
    """An algorithm served by one of the tiny Adult artifacts in ``registry.artifacts_root``,
    registered the way every model is (``register_model``), which stores it in
    MODEL_ARTIFACTS_PATH: that must be the registry's folder."""
    from django.conf import settings

    assert Path(settings.MODEL_ARTIFACTS_PATH) == registry.artifacts_root, (
        "set settings.MODEL_ARTIFACTS_PATH to the registry's folder (the artifacts_dir fixture)"
    )
    return register_model(
        artifact=registry.artifacts_root / artifact,
        endpoint_name=endpoint,
        name=name,
        version=version,
        status=status,
        owner="tests",
        allow_pickle=True,
        kind="income_classifier",
        target_column="income",
    ).algorithm


def operator(username: str = "operator", *, permissions: Sequence[str] | None = None) -> Any:
    """A staff user holding ``permissions`` (codenames of the endpoints app, e.g.
    "add_abtest"), by default all of that app's: what an operator is given in the admin.
    ``is_staff`` alone allows no change (policy.Operators)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user(username, password="pw", is_staff=True)
    granted = Permission.objects.filter(content_type__app_label="endpoints")
    if permissions is not None:
        granted = granted.filter(codename__in=permissions)
        assert granted.count() == len(permissions), f"unknown permission in {permissions}"
    user.user_permissions.set(granted)
    return get_user_model().objects.get(pk=user.pk)  # afresh: permissions are cached per object


def log_rows(algorithm: MLAlgorithm, n: int, **fields: Any) -> list[MLRequest]:
    """``n`` log rows of ``algorithm`` written directly (no prediction, no tally): a log to
    read, filter and prune."""
    return MLRequest.objects.bulk_create(
        MLRequest(
            input_data={"i": i},
            full_response={},
            response="<=50K",
            parent_mlalgorithm=algorithm,
            **fields,
        )
        for i in range(n)
    )


def use_folder_storage(settings: Any, alias: str, folder: Path) -> Path:
    """The storage ``alias`` (batch_jobs, log_archive, model_artifacts) in ``folder``."""
    settings.STORAGES = {
        **settings.STORAGES,
        alias: {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(folder)},
        },
    }
    return folder


def sent(response: Any) -> Any:
    """``response`` once a WSGI server has sent it: what it holds open (the file a
    FileResponse streams) is closed, as ``response.close()`` does, without the
    request_finished signal that would also close the test's database connection."""
    for close in getattr(response, "_resource_closers", ()):
        close()
    return response


def anonymous(address: str = "127.0.0.1") -> Any:
    """An anonymous client, as a view would see one (``policy.Actor``)."""
    from django.contrib.auth.models import AnonymousUser

    from apps.endpoints.policy import Actor

    return Actor(user=AnonymousUser(), address=address)
