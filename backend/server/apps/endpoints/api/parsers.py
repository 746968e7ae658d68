"""Request bodies as the API takes them."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class JSONParser(parsers.JSONParser):
    """DRF's, refusing text that UTF-8 cannot hold: a ``\\ud800``-style escape is valid JSON
    and makes a lone surrogate, which could be neither logged nor answered (a 500)."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        raw = stream.read() if stream is not None else b""
        data = super().parse(io.BytesIO(raw), media_type, parser_context)
        # Only a \ud800-\udfff escape can make a surrogate (UTF-8 cannot hold one): a body
        # without one needs no walk over its values (140,000 of them in a 10,000-row tensor).
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        if encoding.lower().replace("-", "") == "utf8" and not _SURROGATE_ESCAPE.search(raw):
            return data
        try:
            _encodable(data)
        except UnicodeEncodeError:
            raise ParseError(
                "JSON parse error - the body holds a lone surrogate (a \\ud800-\\udfff escape "
                "outside a pair): not text."
            ) from None
        return data


def _encodable(value: Any) -> None:
    if isinstance(value, str):
        value.encode()
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _encodable(key)
            _encodable(item)
    elif isinstance(value, list):
        for item in value:
            _encodable(item)


class AnyTypeJSONParser(JSONParser):
    """JSON whatever the Content-Type says, or without one: the Open Inference Protocol's
    clients (tritonclient) send their JSON bodies without naming a type."""

    media_type = "*/*"
