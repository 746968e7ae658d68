"""``manage.py api_token NAME``: print the API token of user NAME, made on first use (the
same key after), for scripts: ``Authorization: Token <key>`` (``make token NAME=...``).

Only the key is printed, so that ``AUTH="Authorization: Token $(make -s token NAME=admin)"``
works; DRF's own ``drf_create_token`` prints a sentence around it. Scripts should use a
token rather than HTTP Basic: Basic makes the server hash the password on every request
(PBKDF2, a few hundred milliseconds of CPU), a token costs one indexed lookup.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Print a user's API token (made on first use), for Authorization: Token <key>."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        model = get_user_model()
        try:
            user = model.objects.get(**{model.USERNAME_FIELD: options["username"]})
        except model.DoesNotExist:
            raise CommandError(
                f"No user {options['username']!r}: create one first (make superuser)."
            ) from None
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
