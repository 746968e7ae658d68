"""WSGI entry point. Only wiring: the model registry is built by the ml app's AppConfig."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")

application = get_wsgi_application()
