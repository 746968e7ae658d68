"""Request bodies as the API takes them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's, refusing text that UTF-8 cannot hold: a ``\\ud800``-style escape is valid JSON
    and makes a lone surrogate, which could be neither logged nor answered (a 500)."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
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
