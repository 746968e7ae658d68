"""The request log's task, for Celery (``make worker``; the beat sends it daily)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from apps.endpoints.serving import retention


# The name it had when it lived in apps/endpoints/tasks.py: the beat's entry names it.
@shared_task(name="apps.endpoints.tasks.prune_requests", ignore_result=True)
def prune_requests() -> int:
    """The request log's retention, daily from the beat; nothing while
    MLREQUEST_RETENTION_DAYS is 0 (keep every row)."""
    if settings.MLREQUEST_RETENTION_DAYS < 1:
        return 0
    return retention.prune(
        days=settings.MLREQUEST_RETENTION_DAYS, archive=settings.MLREQUEST_ARCHIVE
    ).deleted
