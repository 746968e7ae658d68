from django.apps import AppConfig


class EndpointsConfig(AppConfig):
    name = "apps.endpoints"
    label = "endpoints"
    verbose_name = "Prediction endpoints"
