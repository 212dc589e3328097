"""Which URLs are fetched at all, and where a redirect really points.

Every way a URL can be malformed (an unparsable string, a surrogate, a bad
port, an empty or over-long host label, a scheme other than http/https) is
refused here with :class:`~..errors.UnsupportedAttachmentURL`, before any
connection, for the attachment's own URL and for every redirect target.
"""

from __future__ import annotations

import re

import httpx2

from ..errors import UnsupportedAttachmentURL, redact

__all__ = ["parse", "redirect_target"]

REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
# Host names after IDNA encoding, IPv4 and (unbracketed) IPv6 literals.
_HOST = re.compile(r"[A-Za-z0-9._:-]+")
_FIX = "Fix the URL."


def parse(url: str, source: str, *, given: str | None = None) -> httpx2.URL:
    """``url`` as an absolute http(s) URL, or :class:`UnsupportedAttachmentURL`.

    ``source`` names the attachment in messages: for a redirect target it is
    the attachment's own URL, and the message names the target too, as
    ``given`` by the server when that differs from its normalised form.
    """
    shown = _shown(given or url)
    redirected = redact(url) != source
    where = f" (redirected to {shown})" if redirected else ""
    subject = (
        f"Attachment {source} redirected to {shown!r}, which"
        if redirected
        else (f"Attachment URL {shown!r}")
    )
    try:
        parsed = httpx2.URL(url)
        host = parsed.raw_host.decode("ascii")
    except (httpx2.InvalidURL, UnicodeError, ValueError) as error:
        reason = _reason(error)
        raise UnsupportedAttachmentURL(
            f"{subject} is not a valid URL: {reason}. {_FIX}",
            source=source,
        ) from None
    if parsed.scheme not in ("http", "https") or not host:
        raise UnsupportedAttachmentURL(
            f"Attachment {source}{where} is not an http:// or https:// URL; only those "
            "are fetched. For a local file use path=, for data you hold use content=.",
            source=source,
        )
    problem = _host_problem(host)
    if problem is None and parsed.port is not None and not 0 < parsed.port < 65536:
        problem = f"has port {parsed.port}, outside 1-65535"
    if problem:
        raise UnsupportedAttachmentURL(
            f"{subject} is not a valid URL: its host {parsed.host!r} {problem}. {_FIX}",
            source=source,
        )
    return parsed


def redirect_target(response: httpx2.Response, url: httpx2.URL, source: str) -> httpx2.URL | None:
    """Where ``response`` redirects to, resolved against ``url``; ``None`` if it does not.

    httpx2 would raise its own, untyped ``InvalidURL`` for a ``Location`` such
    as ``javascript:...`` or ``http://host:99999/``; here every target passes
    :func:`parse`, so it is a typed refusal naming the attachment.
    """
    if response.status_code not in REDIRECT_STATUS:
        return None
    location = response.headers.get("location")
    if location is None:
        return None
    try:
        target = str(url.join(location.strip()))
    except (httpx2.InvalidURL, UnicodeError, ValueError) as error:
        raise UnsupportedAttachmentURL(
            f"Attachment {source} redirected to {_shown(location)!r}, which is not a "
            f"valid URL: {_reason(error)}. The server is misconfigured; use another URL.",
            source=source,
        ) from None
    return parse(target, source, given=location.strip())


def _host_problem(host: str) -> str | None:
    """Why ``host`` (IDNA-encoded) cannot be looked up, if it cannot."""
    if not _HOST.fullmatch(host):
        return "has characters no host name has"
    if ":" in host:
        return None  # an IPv6 literal; httpx2 has checked it
    labels = host.rstrip(".").split(".")
    if len(host) > 253:
        return "is longer than 253 characters"
    if any(not label for label in labels):
        return "has an empty label (two dots in a row, or a leading dot)"
    if any(len(label) > 63 for label in labels):
        return "has a label longer than 63 characters"
    return None


def _reason(error: BaseException) -> str:
    if isinstance(error, UnicodeError):
        return "it has characters that cannot be encoded (a lone surrogate?)"
    return str(error) or type(error).__name__


def _shown(url: str) -> str:
    """The URL as safe to show: credentials redacted, unencodable characters escaped."""
    return redact(url).encode("utf-8", "backslashreplace").decode("utf-8")
