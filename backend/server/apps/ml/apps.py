from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings


class MlConfig(AppConfig):
    name = "apps.ml"
    label = "ml"
    verbose_name = "Machine learning"

    def ready(self) -> None:
        # Build the registry here, not in wsgi.py, so tests and management commands have
        # one too. No database access: the ML layer has none (the catalogue is in
        # apps.endpoints, which registers the demo models after migrate).
        from apps.ml import shared_store
        from apps.ml.registry import MLRegistry, set_registry

        set_registry(
            MLRegistry(
                settings.MODEL_ARTIFACTS_PATH,
                compile=settings.ML_COMPILED_INFERENCE,
                trusted=settings.SKOPS_TRUSTED_TYPES,
                fetch=shared_store.fetch if shared_store.configured() else None,
            )
        )
