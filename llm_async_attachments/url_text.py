"""What a URL's text says, read without a parser that may refuse it or cost time.

The pool's per-host slots (``http.fetch``) and a prepare call's workers
(``core.prepare``) count by :func:`host_of`; the shared cache and its rules
never share a response fetched with credentials (:func:`has_credentials`). It
imports nothing heavier than ``re``, so the engine can use it before the HTTP
layer is loaded.
"""

from __future__ import annotations

import re

__all__ = ["has_credentials", "host_of"]

_AUTHORITY_END = re.compile(r"[/?#]")


def _authority(url: str) -> str:
    return _AUTHORITY_END.split(url.partition("://")[2], maxsplit=1)[0]


def host_of(url: str) -> str:
    """The host part of ``url`` as written (with its port, without credentials),
    lower-cased, cheaply: no full parse, and never an error."""
    return _authority(url).rpartition("@")[2].lower()


def has_credentials(url: str) -> bool:
    """Whether ``url`` carries user information (``https://user:pw@host/``), which a
    fetch sends as ``Authorization``; an empty one (``https://@host/``) counts too."""
    return "@" in _authority(url)
