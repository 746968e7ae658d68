from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_migrate


class MlConfig(AppConfig):
    name = "apps.ml"
    label = "ml"
    verbose_name = "Machine learning"

    def ready(self) -> None:
        # Build the registry here, not in wsgi.py, so tests and management commands have
        # one too. No database access: the tables may not exist yet.
        from apps.ml.demo import DEMO_MODELS
        from apps.ml.registry import MLRegistry, set_registry

        declared = DEMO_MODELS if settings.ML_DEMO_MODELS else ()
        set_registry(
            MLRegistry(
                settings.MODEL_ARTIFACTS_PATH, declared, compile=settings.ML_COMPILED_INFERENCE
            )
        )
        post_migrate.connect(_register_declared, dispatch_uid="ml_register_declared")


def _register_declared(**kwargs: Any) -> None:
    """After ``migrate``, write the declared (demo) algorithms, so the catalogue is filled
    before the first request."""
    from apps.ml.registry import get_registry

    # Sent once per migrated app; the catalogue lives in the endpoints app.
    if kwargs["app_config"].label == "endpoints" and kwargs.get("using") == "default":
        get_registry().ensure_declared()
