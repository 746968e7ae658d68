"""Per-client rates (``PREDICT_THROTTLE_RATE``, ``MANAGEMENT_THROTTLE_RATE``), failing open;
and a rate of their own for clients that do not sign in (``ANONYMOUS_PREDICT_THROTTLE_RATE``,
on by default in production), on top of those.

The counts live in Django's cache (``CACHE_URL``). When that cache is down (a Redis
restarting, a ``db://`` table locked) the service keeps serving, unthrottled, and logs a
warning: a rate limiter is a guard for the service, and must not be the reason it stops
answering. ``/readyz`` reports the cache's state without failing on it.

A client is its user when authenticated, else its address (``client_address``): the peer's,
unless ``NUM_PROXIES`` says how many proxies' X-Forwarded-For entries to trust.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, cast

from django.core.cache import cache
from django.db import DatabaseError
from django.http import HttpRequest
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle, SimpleRateThrottle

if TYPE_CHECKING:  # DRF imports throttle classes while rest_framework.views loads
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

# What the cache backends we configure (env.env_cache) raise when their store is down.
CACHE_ERRORS = (RedisError, DatabaseError, OSError)


def client_address(request: HttpRequest | Request) -> str:
    """The client's IP address, for rates and for login lockouts (settings.py,
    ``AXES_CLIENT_IP_CALLABLE``): DRF's rule (``BaseThrottle.get_ident``), REMOTE_ADDR or,
    with ``NUM_PROXIES=n``, the n-th X-Forwarded-For entry from the right, the one the
    farthest of our proxies appended; a client can put anything before it, nothing after.
    Something that is not an IP address (the header sent straight to the server, past the
    proxy) counts as REMOTE_ADDR: it must not make a new client per value, nor reach axes'
    address column (PostgreSQL's inet refuses it). Empty when there is no address."""
    # DRF types it for its Request; it reads .headers and .META, which a Django one has too.
    ident = BaseThrottle().get_ident(cast(Request, request))
    try:
        return str(ipaddress.ip_address(ident))
    except ValueError:
        return str(request.META.get("REMOTE_ADDR") or "")


class FailOpenScopedRateThrottle(ScopedRateThrottle):
    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return super().allow_request(request, view)
        except CACHE_ERRORS as exc:
            logger.warning("Throttling is off: the cache is unavailable (%s).", exc)
            return True

    def get_ident(self, request: Request) -> str:
        return client_address(request)


class AnonymousRateThrottle(FailOpenScopedRateThrottle):
    """The rate ``<scope>_anonymous`` for clients that are not signed in, by address; a
    signed-in client, or a scope without such a rate, passes. On the predict routes of an
    open service the credentials are read only when the request carries some
    (``policy.PredictAccessMixin``), so a client with a token is counted as itself."""

    def allow_request(self, request: Request, view: APIView) -> bool:
        scope = getattr(view, self.scope_attr, None)
        rate = self.THROTTLE_RATES.get(f"{scope}_anonymous") if scope else None
        if rate is None or request.user.is_authenticated:
            return True
        self.scope, self.rate = f"{scope}_anonymous", rate
        self.num_requests, self.duration = self.parse_rate(rate)
        try:
            return SimpleRateThrottle.allow_request(self, request, view)
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
