"""Credentials per origin: an ``Authorization`` value for exactly one scheme, host and port.

``LLM_ASYNC_ATTACHMENTS_CREDENTIALS`` (``Config.credentials``) holds entries
``ORIGIN=HEADER-VALUE`` separated by ``;``, such as
``https://files.example.com=Bearer abc``. A value is sent only in requests to
its own origin: never after a redirect to another origin, never through a plain
``http`` proxy. It is never shown: not in ``repr(Config)``, an error message, a
warning or ``llm async-attachments status``, which name the origin alone.
"""

from __future__ import annotations

import base64
import hashlib
import netrc
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["Credential", "for_url", "from_netrc", "origin_of", "parse", "valid"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Credential:
    """The ``Authorization`` header value for one origin; its repr hides the value."""

    origin: str
    """``scheme://host:port``, as :func:`origin_of` spells it."""
    value: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credential({self.origin!r}, '***')"

    @property
    def fingerprint(self) -> str:
        """Tells credentials apart in cache keys without holding the secret."""
        return hashlib.sha256(self.value.encode()).hexdigest()[:32]


def origin_of(url: str) -> str | None:
    """``scheme://host:port`` of an ``http``/``https`` URL (lower case, the default port
    written out), or ``None`` for any other URL."""
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def parse(raw: str) -> tuple[Credential, ...]:
    """``ORIGIN=VALUE;ORIGIN=VALUE`` as credentials.

    Raises ``ValueError`` whose message names the bad entry by its number and
    never holds the value.
    """
    found: list[Credential] = []
    for number, entry in enumerate((e for e in raw.split(";") if e.strip()), start=1):
        written, equals, value = entry.partition("=")
        origin = origin_of(written)
        if not equals or not value.strip():
            raise ValueError(f"entry {number} has no '=' followed by a header value")
        if origin is None or not _bare(written):
            raise ValueError(
                f"entry {number} does not start with an http or https origin "
                "(scheme://host[:port], with no path, user or query)"
            )
        found.append(Credential(origin, value.strip()))
    return tuple(found)


def valid(value: object) -> bool:
    """Whether ``value`` is credentials as ``Config`` holds them: each origin once."""
    if not isinstance(value, tuple) or not all(isinstance(each, Credential) for each in value):
        return False
    origins = [each.origin for each in value]
    return len(set(origins)) == len(origins) and all(
        origin_of(origin) == origin and each.value.strip()
        for origin, each in zip(origins, value, strict=True)
    )


def for_url(credentials: tuple[Credential, ...], url: str) -> Credential | None:
    """The credential for ``url``'s origin, if one is configured."""
    if not credentials:
        return None
    origin = origin_of(url)
    return next((each for each in credentials if each.origin == origin), None)


def _bare(written: str) -> bool:
    parts = urlsplit(written.strip())
    return parts.path in ("", "/") and not (parts.query or parts.fragment or "@" in parts.netloc)


def from_netrc(url: str) -> str | None:
    """Basic auth for ``url``'s host from ``$NETRC`` or ``~/.netrc``, as curl and httpx2's
    ``NetRCAuth`` read it; ``None`` if there is no such file or entry. Reads a file:
    call it off the event loop."""
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        found = netrc.netrc(path).authenticators(urlsplit(url).hostname or "")
    except (OSError, netrc.NetrcParseError, ValueError):
        return None
    if found is None:
        return None
    login, _account, password = found
    return "Basic " + base64.b64encode(f"{login}:{password or ''}".encode()).decode("ascii")
