"""The request log's task, for Celery (``make worker``; the beat sends it daily)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from apps.endpoints.serving import retention


# The name it had when it lived in apps/endpoints/tasks.py: the beat's entry names it.
@shared_task(name="apps.endpoints.tasks.prune_requests", ignore_result=True)
def prune_requests() -> int:
    """The request log's retention, daily from the beat: replaced feedback values older
    than FEEDBACK_REVISION_RETENTION_DAYS, then log rows older than
    MLREQUEST_RETENTION_DAYS; each not while its setting is 0 (keep them all). How many
    rows and revisions it deleted."""
    deleted = 0
    if settings.FEEDBACK_REVISION_RETENTION_DAYS >= 1:
        deleted += retention.prune_revisions(days=settings.FEEDBACK_REVISION_RETENTION_DAYS)
    if settings.MLREQUEST_RETENTION_DAYS >= 1:
        deleted += retention.prune(
            days=settings.MLREQUEST_RETENTION_DAYS, archive=settings.MLREQUEST_ARCHIVE
        ).deleted
    return deleted
