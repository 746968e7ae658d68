"""ASGI entry point. Only wiring: the model registry is built by the ml app's AppConfig."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")

application = get_asgi_application()
