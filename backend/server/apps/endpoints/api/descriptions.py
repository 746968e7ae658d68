"""What the browsable API shows of a view's docstring.

The docstrings are written for Python readers, with reStructuredText's double backticks
for code. DRF renders them as Markdown when the markdown package is installed and as
escaped text otherwise, so a person saw the double backticks themselves. Here:
the text without the docstring's hard line breaks, each paragraph its own ``<p>``, and
double-backticked spans as ``<code>``; plain text (OPTIONS answers) drops the backticks.
"""

from __future__ import annotations

import re
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from rest_framework.utils.formatting import dedent

_CODE = re.compile(r"``(.+?)``", re.DOTALL)


def view_description(view: Any, html: bool = False) -> str | SafeString:
    description = getattr(view, "description", None) or view.__class__.__doc__ or ""
    text = dedent(str(description)).strip()
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    if not html:
        return "\n\n".join(_CODE.sub(r"\1", p) for p in paragraphs)
    rendered = [_CODE.sub(r"<code>\1</code>", escape(p)) for p in paragraphs]
    return mark_safe("".join(f"<p>{p}</p>" for p in rendered))  # every part escaped above
