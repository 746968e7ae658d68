"""What Django's error reports show: the debug error page (``make run``, DEBUG on) and the
error e-mails and log records made from them.

Django's own filter hides a setting, a request.META entry or a cookie whose name holds
API, AUTH, TOKEN, KEY, SECRET, PASS, SIGNATURE or HTTP_COOKIE. This service is configured
by URLs that carry credentials (DATABASE_URL, CELERY_BROKER_URL, CACHE_URL), and under
runserver request.META holds the whole process environment: none of those names holds
one of the words, so the debug page showed every password in them. ``SecretsFilter``
hides names with URL, DSN, BROKER, DATABASE, CREDENTIAL or PRIVATE as well, and masks
the password of any credential URL (``scheme://user:password@host``) or ``password=``
pair in a value, wherever it is (a nested setting, a traceback's local variable): the
rest of the value, its host, stays readable. Hiding every name with URL hides harmless
ones too (STATIC_URL, ROOT_URLCONF): a small loss on a debug page, where a list of names
that carry credentials would miss the next one (SENTRY_URL, a REDIS_URL of a plugin).

Not hidden: a secret in a value of another form (a bare token in a variable named
``x``); DEBUG stays a development setting.
"""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest
from django.views.debug import SafeExceptionReporterFilter

# Django's words, then the ones this service's settings and environment need.
HIDDEN_NAMES = re.compile(
    "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE"
    "|URL|DSN|BROKER|DATABASE|CREDENTIAL|PRIVATE",
    flags=re.IGNORECASE,
)
# The password of scheme://user:password@host, and of password=... (libpq's form).
_CREDENTIAL = re.compile(
    r"(?P<url>\b[a-z][a-z0-9+.\-]*://[^\s/@:]*:)[^\s/@]+(?=@)"
    r"|(?P<pair>\bpass(?:word|wd)?\s*=\s*)[^\s&;]+",
    flags=re.IGNORECASE,
)

_LARGEST_CONTAINER = 1000


class SecretsFilter(SafeExceptionReporterFilter):
    hidden_settings = HIDDEN_NAMES

    def cleanse_setting(self, key: int | str, value: Any) -> Any:
        # Django's recursion into dicts, lists and tuples calls this again for each item.
        cleansed = super().cleanse_setting(key, value)
        if _is(cleansed, str):
            return mask_credentials(cleansed, self.cleansed_substitute)
        return cleansed

    def cleanse_special_types(self, request: HttpRequest | None, value: Any) -> Any:
        """A traceback's local variables: a connection string a failing connect() held,
        the URL a setting was parsed from."""
        value = super().cleanse_special_types(request, value)
        if _is(value, str) or (
            # A batch's million cells would take seconds; the page shows 4 KB of them.
            _is(value, dict | list | tuple) and len(value) <= _LARGEST_CONTAINER
        ):
            return self.cleanse_setting("", value)
        return value


def _is(value: Any, kind: Any) -> bool:
    """isinstance, but a lazy object (which claims its value's class) is not one: it is
    left for the page to show, not evaluated here."""
    return issubclass(type(value), kind)


def mask_credentials(text: str, substitute: str) -> str:
    return _CREDENTIAL.sub(lambda m: (m.group("url") or m.group("pair")) + substitute, text)
