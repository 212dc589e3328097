"""A URL's host as the per-host fetch limits count it, read from the URL's text.

The pool's per-host slots (``http.fetch``) and a prepare call's workers
(``prepare``) both count by it; it imports nothing heavier than ``re``, so
that ``prepare`` can use it before the HTTP layer is loaded.
"""

from __future__ import annotations

import re

__all__ = ["host_of"]

_AUTHORITY_END = re.compile(r"[/?#]")


def host_of(url: str) -> str:
    """The host part of ``url`` as written (with its port, without credentials),
    lower-cased, cheaply: no full parse, and never an error."""
    authority = _AUTHORITY_END.split(url.partition("://")[2], maxsplit=1)[0]
    return authority.rpartition("@")[2].lower()
