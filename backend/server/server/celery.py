"""The Celery application: ``celery -A server worker`` (``make worker``) runs batch jobs'
tasks (``apps/endpoints/batch/tasks.py``). Its settings are the ``CELERY_*`` ones in
``settings.py``."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server.settings")

app = Celery("ml_pipeline")
app.config_from_object("django.conf:settings", namespace="CELERY")
# The tasks of batch jobs and of the request log's retention; each keeps the name it had
# before they moved into their rooms (``name=``), so queued messages still find them.
app.autodiscover_tasks(["apps.endpoints.batch", "apps.endpoints.serving"])
# Named, not imported: this module loads with Django's settings, before the apps are ready.
app.steps["consumer"].add("apps.endpoints.batch.tasks:ResumeOnConnect")
app.steps["consumer"].add("apps.endpoints.batch.tasks:WatchLeases")
