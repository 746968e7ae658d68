"""Per-client rates (``PREDICT_THROTTLE_RATE``, ``MANAGEMENT_THROTTLE_RATE``), failing open.

The counts live in Django's cache (``CACHE_URL``). When that cache is down (a Redis
restarting, a ``db://`` table locked) the service keeps serving, unthrottled, and logs a
warning: a rate limiter is a guard for the service, and must not be the reason it stops
answering. ``/readyz`` reports the cache's state without failing on it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.core.cache import cache
from django.db import DatabaseError
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle

if TYPE_CHECKING:  # DRF imports throttle classes while rest_framework.views loads
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

# What the cache backends we configure (env.env_cache) raise when their store is down.
CACHE_ERRORS = (RedisError, DatabaseError, OSError)


class FailOpenScopedRateThrottle(ScopedRateThrottle):
    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return super().allow_request(request, view)
        except CACHE_ERRORS as exc:
            logger.warning("Throttling is off: the cache is unavailable (%s).", exc)
            return True


def cache_state() -> str:
    """``ok``, or why the cache cannot be read (for ``/readyz``)."""
    try:
        cache.get("readyz-cache-probe")
    except CACHE_ERRORS as exc:
        return f"unavailable: {exc} (throttling is off until it answers)"
    return "ok"
