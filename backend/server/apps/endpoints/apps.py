from typing import Any

from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import post_migrate


class EndpointsConfig(AppConfig):
    name = "apps.endpoints"
    label = "endpoints"
    verbose_name = "Prediction endpoints"

    def ready(self) -> None:
        from apps.endpoints.api.login_attempts import forget_own_failures

        post_migrate.connect(_register_demo_models, sender=self)
        user_logged_in.connect(forget_own_failures, dispatch_uid="forget_own_failures")


def _register_demo_models(using: str, **kwargs: Any) -> None:
    """After ``migrate``, the demo models (ML_DEMO_MODELS), so the catalogue is filled
    before the first request."""
    if using == "default":
        from apps.endpoints.catalogue import demo

        demo.ensure_registered()
