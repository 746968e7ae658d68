"""Failed logins: locks that expire by themselves.

Every password is checked by ``django.contrib.auth.authenticate(request=...)``: the admin's
and the browsable API's login forms, and HTTP Basic on each API request. django-axes'
backend comes first (settings.py, "Login attempts") and counts the failures in the
database; past ``LOGIN_FAILURE_LIMIT`` for a user name from one address, or from an
address for any names, and past ``LOGIN_NAME_FAILURE_LIMIT`` (much higher) for a user name
from any addresses (``LoginAttemptsHandler``), it refuses for ``LOGIN_LOCKOUT_MINUTES``
before any password is hashed (Django's PBKDF2: 0.5 s of CPU a try, measured here; a
refused try, about 10 ms and three queries), and refuses the right password too: guessing
gains nothing. Operator names are public (``created_by``, the reports): a name alone locked
at the low limit would let anyone lock an operator out from everywhere.

- HTTP Basic: DRF answers a failed check 401; a lock is answered here 429 ``locked_out``
  with Retry-After, in the API's error shape.
- The login forms: axes' middleware answers ``lockout_response``, a plain 429 page.
- Tokens never reach ``authenticate()``: wrong ones are counted per address in Django's
  cache (``CACHE_URL``, as the rates), and past the same limit that address's tokens are
  refused for the same time. A key is 40 random hex digits, so guessing is hopeless
  anyway; the lock keeps a client that tries from costing a query per guess.

``manage.py axes_reset`` (or ``axes_reset_ip``, ``axes_reset_username``) lifts axes' locks.
"""

from __future__ import annotations

import logging
from typing import Any

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.cache import cache
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token
from rest_framework.request import Request

from apps.endpoints.api.throttling import CACHE_ERRORS, client_address

logger = logging.getLogger(__name__)


class LockedOut(exceptions.Throttled):
    """429 ``locked_out``, with Retry-After: what the API answers a locked login."""

    default_detail = (
        "Too many failed logins for this user name or from this address; "
        "logins are refused until the lock expires."
    )
    default_code = "locked_out"


def lockout_seconds() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds())


def _locked_out() -> LockedOut:
    # The lock lasts this long from the failure that set it: an upper bound later on.
    return LockedOut(wait=lockout_seconds())


def lockout_response(
    request: HttpRequest, original_response: Any = None, credentials: Any = None
) -> HttpResponse:
    """axes' answer to a locked login form (``AXES_LOCKOUT_CALLABLE``): a plain 429 page
    instead of the form, with Retry-After. Its arguments are axes' calling convention."""
    seconds = lockout_seconds()
    response = HttpResponse(
        f"Too many failed logins for this user name or from this address. Logins are "
        f"refused for up to {seconds // 60} minutes; an operator can lift the lock with "
        f"`manage.py axes_reset_username <name>`.\n",
        status=429,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(seconds)
    return response


class LoginAttemptsHandler(AxesDatabaseHandler):  # type: ignore[misc]  # axes is untyped
    """axes' database handler, with one more lock: a user name past
    ``LOGIN_NAME_FAILURE_LIMIT`` failures from any addresses (within the lock time). axes
    keeps one limit for all its lockout parameters (the pair and the address, at
    ``LOGIN_FAILURE_LIMIT``), so the name's count is given to it on that scale: it reaches
    the limit exactly when the name reaches its own."""

    def get_failures(self, request: Any, credentials: dict[str, Any] | None = None) -> int:
        failures: int = super().get_failures(request, credentials)
        username = get_client_username(request, credentials)
        if not username:
            return failures
        recent = AccessAttempt.objects.filter(
            username=username, attempt_time__gte=get_cool_off_threshold(request)
        )
        by_name = recent.aggregate(n=Sum("failures_since_start"))["n"] or 0
        scaled = by_name * settings.AXES_FAILURE_LIMIT // settings.LOGIN_NAME_FAILURE_LIMIT
        return max(failures, scaled)


# -- HTTP Basic --------------------------------------------------------------------------

# Django's User.username holds 150 characters (axes' column, 255): a longer name exists
# nowhere and is not worth recording.
USERNAME_MAX_LENGTH = 150


class LockoutBasicAuthentication(authentication.BasicAuthentication):
    def authenticate_credentials(
        self, userid: str, password: str, request: Request | None = None
    ) -> tuple[AbstractBaseUser, None]:
        if len(userid) > USERNAME_MAX_LENGTH or "\x00" in userid:
            # No user has this name; PostgreSQL would refuse to even look it up (NUL).
            raise exceptions.AuthenticationFailed("Invalid username/password.")
        # DRF's own, given the request without its body
        login = _without_body(request)
        credentials = {get_user_model().USERNAME_FIELD: userid, "password": password}
        user = authenticate(request=login, **credentials)
        if user is None:
            if getattr(login, "axes_locked_out", False):  # axes' flag: this try, or before
                raise _locked_out()
            raise exceptions.AuthenticationFailed("Invalid username/password.")
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return user, None


def _without_body(request: Request | None) -> HttpRequest | None:
    """What axes is shown of an API request: its headers, path and query, not its body.
    axes records a failure's form fields, and on a DRF request reading them parses the body
    (a whole batch upload) before the credentials are even refused."""
    if request is None:
        return None
    login = HttpRequest()
    login.META = request.META
    login.method = request.method
    login.path = request.path
    login.path_info = request.path_info
    login.GET = request.query_params
    return login


class LockoutBasicScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """The OpenAPI security scheme of DRF's Basic, which drf-spectacular gives no
    subclass by itself."""

    target_class = LockoutBasicAuthentication
    name = "basicAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "basic"}


def forget_own_failures(
    sender: Any, request: HttpRequest | None, user: AbstractBaseUser, **kwargs: Any
) -> None:
    """On ``user_logged_in`` (the login forms): that user name's failures from that address
    are forgotten, so a user who mistyped starts afresh. Not axes' own reset, which forgets
    every failure from the address and every failure for the name: anyone with an account
    could then log in between guesses at other names and never reach the address's limit.
    HTTP Basic logs no one in: its failures expire with the lock time."""
    address = client_address(request) if request is not None else ""
    username = user.get_username()
    if address and username:  # both, or reset_attempts would widen to the other alone
        AxesProxyHandler.reset_attempts(ip_address=address, username=username)


# -- Tokens ------------------------------------------------------------------------------


class LockoutTokenAuthentication(authentication.TokenAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Token] | None:
        auth = authentication.get_authorization_header(request).split()
        if not auth or auth[0].lower() != self.keyword.lower().encode():
            return None  # no token: nothing to count, and no cache read for it
        address = client_address(request)
        if _token_failures(address) >= settings.AXES_FAILURE_LIMIT:
            raise _locked_out()  # before the lookup: a locked address costs no query
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            if _count_token_failure(address) >= settings.AXES_FAILURE_LIMIT:
                raise _locked_out() from None
            raise

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        if "\x00" in key:  # no key has one; PostgreSQL would refuse to look it up (a 503)
            raise exceptions.AuthenticationFailed("Invalid token.")
        user, token = super().authenticate_credentials(key)
        return user, token


def _token_key(address: str) -> str:
    return f"login-failures:token:{address}"


def _token_failures(address: str) -> int:
    try:
        return int(cache.get(_token_key(address), 0))
    except CACHE_ERRORS as exc:  # fail open, as the rates do (throttling.py)
        logger.warning("Token lockout is off: the cache is unavailable (%s).", exc)
        return 0


def _count_token_failure(address: str) -> int:
    """The address's failures so far, this one included. They expire LOGIN_LOCKOUT_MINUTES
    after the last one (as axes' do). Read and written without a lock, like DRF's rates:
    two workers counting at the same instant may count one."""
    failures = _token_failures(address) + 1
    try:
        cache.set(_token_key(address), failures, timeout=lockout_seconds())
    except CACHE_ERRORS as exc:
        logger.warning("Token lockout is off: the cache is unavailable (%s).", exc)
    return failures
