"""The Celery application: ``celery -A server worker`` (``make worker``) runs batch jobs'
tasks (``apps/endpoints/tasks.py``). Its settings are the ``CELERY_*`` ones in
``settings.py``."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")

app = Celery("ml_pipeline")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["apps.endpoints"])
