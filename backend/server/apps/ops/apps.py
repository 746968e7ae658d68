from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: health and readiness probes, Prometheus metrics."""

    name = "apps.ops"
    label = "ops"
    verbose_name = "Operations"
