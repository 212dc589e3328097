r"""The ``url_support`` setting: by model id, which URL attachments go to the model as URLs.

``LLM_ASYNC_ATTACHMENTS_URL_SUPPORT`` (``Config.url_support``) holds entries
``MODEL-ID=PATTERNS`` separated by ``;``, the patterns separated by ``,``. A
pattern is either

* a MIME pattern (``image/png``, ``image/*``, or ``*`` for every type): URLs of
  that type go to the model unfetched, once their type is known; or
* a URL pattern, ``TYPE@REGEX``: URLs that Python's ``re.match`` finds
  ``REGEX`` in are of type ``TYPE`` and go to the model as they are, with no
  request of any kind.

MIME types and model ids hold no ``@`` (nor backslash), so a pattern without
one reads as it always did. A regular expression may hold ``;`` and ``,``:
written ``\;`` and ``\,``, they stand for the character itself. A backslash
and the character after it are always read as a pair, so every other escape
(``\.``, ``\\``) reaches the regular expression as written, and ``\,`` inside
``{2\,3}`` is a repetition.
"""

from __future__ import annotations

import re

__all__ = ["UrlTypes", "parse", "spell", "url_pattern", "valid"]

UrlTypes = tuple[tuple[str, tuple[str, ...]], ...]
"""``Config.url_support``: (model id, patterns) pairs, each pattern a MIME pattern (``*``
is every type) or a URL pattern ``TYPE@REGEX``."""

_MIME_TYPE = r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*"
_MIME_PATTERN = re.compile(rf"\*|\*/\*|[a-z0-9][a-z0-9!#$&^_.+-]*/\*|{_MIME_TYPE}", re.I)
_CONCRETE_TYPE = re.compile(_MIME_TYPE, re.I)
_PAIR = re.compile(r"\\(.)", re.S)
_SEPARATORS = ";,"


def parse(raw: str) -> UrlTypes:
    r"""Environment text to (model id, patterns) pairs.

    ``b=*;c=`` -> ``(("b", ("*",)), ("c", ()))``;
    ``g=video/youtube@^https://youtu\.be/`` ->
    ``(("g", (r"video/youtube@^https://youtu\.be/",)),)``. An entry without ``=``
    raises ``ValueError``.
    """
    pairs = []
    for entry in _split(raw, ";"):
        if not entry.strip():
            continue
        model_id, equals, patterns = entry.partition("=")
        if not equals:
            raise ValueError(entry)
        listed = (_unescape(pattern).strip() for pattern in _split(patterns, ","))
        pairs.append((model_id.strip(), tuple(pattern for pattern in listed if pattern)))
    return tuple(pairs)


def valid(value: object) -> bool:
    """Whether ``value`` is a tuple of (model id, patterns) pairs, each model once, every
    pattern a MIME pattern or a ``TYPE@REGEX`` whose regular expression compiles."""
    if not isinstance(value, tuple):
        return False
    seen = set()
    for pair in value:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            return False
        model_id, patterns = pair
        if not isinstance(model_id, str) or not model_id.strip() or model_id in seen:
            return False
        seen.add(model_id)
        if not isinstance(patterns, tuple) or not all(map(_valid_pattern, patterns)):
            return False
    return True


def url_pattern(pattern: str) -> tuple[str, str] | None:
    """``TYPE@REGEX`` as ``(type, regex)`` (the type in lower case); ``None`` for a MIME
    pattern."""
    kind, at, regex = pattern.partition("@")
    return (kind.strip().lower(), regex.strip()) if at else None


def spell(value: UrlTypes) -> str:
    r"""``value`` as the environment spells it: ``;`` and ``,`` in a pattern escaped."""
    return ";".join(
        f"{model_id}={','.join(map(_escape, patterns))}" for model_id, patterns in value
    )


def _valid_pattern(pattern: object) -> bool:
    if not isinstance(pattern, str):
        return False
    typed = url_pattern(pattern)
    if typed is None:
        return _MIME_PATTERN.fullmatch(pattern) is not None
    kind, regex = typed
    if not _CONCRETE_TYPE.fullmatch(kind) or not regex:
        return False
    try:
        re.compile(regex)
    except re.error:
        return False
    return True


def _split(raw: str, separator: str) -> list[str]:
    """``raw`` cut at each ``separator`` no backslash escapes; the escapes are kept."""
    pieces = []
    start = index = 0
    while index < len(raw):
        if raw[index] == "\\":
            index += 2  # a pair: the backslash and whatever follows it
            continue
        if raw[index] == separator:
            pieces.append(raw[start:index])
            start = index + 1
        index += 1
    pieces.append(raw[start:])
    return pieces


def _unescape(pattern: str) -> str:
    r"""``\;`` and ``\,`` as the character itself; every other pair as written."""
    return _PAIR.sub(lambda pair: pair[1] if pair[1] in _SEPARATORS else pair[0], pattern)


def _escape(pattern: str) -> str:
    """The inverse of :func:`_unescape` for what a pattern means: a separator outside a
    pair is escaped, pairs are kept."""
    return re.sub(r"\\.|[;,]", lambda m: m[0] if len(m[0]) == 2 else "\\" + m[0], pattern)
