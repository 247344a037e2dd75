"""The visitor's languages, from the request's Accept-Language header (never stored)."""

from __future__ import annotations

import re
from functools import lru_cache

MAX_HEADER = 256  # a browser sends a few dozen characters; the rest is ignored
MAX_LANGUAGES = 8
_TAG = re.compile(r"^[a-z]{1,8}(?:-[a-z0-9]{1,8})*$")


def accepted_languages(header: str | None) -> tuple[str, ...]:
    """The header's language tags, lower-case, by preference (`q`), the first listed first
    among equals: "de-AT,de;q=0.9,en;q=0.5" → ("de-at", "de", "en"). `*`, malformed tags and
    q=0 are left out; a missing header is ()."""
    if not header:
        return ()
    return _parse(header[:MAX_HEADER])


@lru_cache(maxsize=1024)
def _parse(header: str) -> tuple[str, ...]:
    weighted = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if _TAG.match(tag) and quality > 0:
            weighted.append((-quality, position, tag))
    return tuple(dict.fromkeys(tag for _, _, tag in sorted(weighted)))[:MAX_LANGUAGES]


def speaks(languages: tuple[str, ...], wanted: str) -> bool:
    """Whether `wanted` ("de" or "de-at") is the visitor's preferred language: "de" also
    matches a preferred "de-at", "de-at" only itself."""
    if not languages:
        return False
    first, wanted = languages[0], wanted.lower()
    return first == wanted or first.startswith(wanted + "-")
