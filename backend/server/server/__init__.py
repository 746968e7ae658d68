# The Celery application is loaded with Django, so that tasks sent from the web process
# use its settings (server/celery.py).
from server.celery import app as celery_app

__all__ = ["celery_app"]
