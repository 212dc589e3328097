"""MIME types: normalising headers, sniffing bytes as llm does, matching patterns."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import puremagic

# llm.utils.MIME_TYPE_FIXES, repeated so that sniffing needs no llm import.
_FIXES = {"audio/wave": "audio/wav"}

_TOKEN = r"[a-z0-9!#$%&'*+.^_`|~-]{1,127}"
_MIME = re.compile(f"{_TOKEN}/{_TOKEN}")

# Bytes to read for sniffing when puremagic does not say; above the 36,870 that
# puremagic 1.28 to 2.2 read from the start of a file.
FALLBACK_SNIFF_BYTES = 64 * 1024


def sniff_bytes(module: Any = puremagic) -> int:
    """How many leading bytes puremagic reads to identify a file.

    puremagic keeps that number in ``puremagic.main.max_head``, a private name
    (1.28 to 2.2 all have it). This is the one place that reads it; if a
    release drops or changes it, a larger fixed head is read instead and
    sniffing still works.
    """
    value = getattr(getattr(module, "main", None), "max_head", None)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return FALLBACK_SNIFF_BYTES


# puremagic reads at most this many bytes from the start of a file.
SNIFF_BYTES = sniff_bytes()


def normalise(content_type: str | None) -> str | None:
    """``Text/Plain; charset=UTF-8`` -> ``text/plain``; missing or malformed -> ``None``.

    Parameters are dropped so that a server's type compares equal to the plain
    types in a model's ``attachment_types``. Of repeated headers (joined with
    commas) the first counts; anything that is not ``type/subtype`` made of
    RFC 9110 token characters is no type at all.
    """
    if not content_type:
        return None
    essence = content_type.split(",", 1)[0].split(";", 1)[0].strip().lower()
    if not _MIME.fullmatch(essence):
        return None
    return _FIXES.get(essence, essence)


def usable(content_type: str | None) -> bool:
    """Whether a server-declared type says anything; ``application/octet-stream`` does not."""
    return content_type not in (None, "application/octet-stream")


def sniff(data: bytes, filename: str | None = None) -> str | None:
    """The type llm would detect for these bytes (``puremagic`` plus llm's fixes).

    With ``filename`` this equals ``llm.utils.mimetype_from_path`` on a file
    holding ``data``: puremagic uses the extension to break ties.
    """
    if not data:
        return None
    try:
        detected = puremagic.from_string(data, mime=True, filename=filename)
    except puremagic.PureError:
        return None
    return _FIXES.get(detected, detected) or None


def matches(content_type: str | None, patterns: Iterable[str]) -> bool:
    """Whether a type matches any of ``patterns`` (``image/png``, ``image/*``, ``*/*``)."""
    if content_type is None:
        return False
    major = content_type.split("/", 1)[0]
    for pattern in patterns:
        pattern = pattern.strip().lower()
        if pattern in ("*", "*/*", content_type):
            return True
        if pattern.endswith("/*") and pattern[:-2] == major:
            return True
    return False
