from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class OpsConfig(AppConfig):
    """Operations: health and readiness probes, Prometheus metrics."""

    name = "apps.ops"
    label = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        post_migrate.connect(_create_cache_table, sender=self)


def _create_cache_table(using: str, **kwargs: Any) -> None:
    # With CACHE_URL=db://, `migrate` (make run, bin/serve, the test database) also creates
    # the cache table, so there is no extra set-up step to forget. A no-op otherwise.
    from django.core.management import call_command

    call_command("createcachetable", database=using, verbosity=0)
