"""``data:`` URL attachments (RFC 2397), decoded where they are: no network, no address policy.

``data:[<media type>][;base64],<data>``: the bytes are in the URL, percent-encoded
or base64. They count against ``max_bytes`` and the call's total like any other
content, checked on their exact decoded size before they are decoded. The type
is the one the URL declares, checked against the bytes: a URL that calls PNG
bytes ``image/jpeg`` is refused rather than sent on under the wrong type.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from .. import mime
from ..caps import Meter
from ..errors import UnsupportedAttachmentURL
from .cpu_jobs import ON_LOOP_LIMIT, off_loop

__all__ = ["Decoded", "decode", "is_data_url"]

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_WHITESPACE = re.compile(rb"[ \t\r\n]")
_DEFAULT_TYPE = "text/plain"  # RFC 2397: text/plain;charset=US-ASCII when none is given
# Types whose bytes identify them: a declared one the bytes contradict is refused.
_SNIFFABLE = ("image/", "audio/", "video/", "application/pdf")
_FIX = "Write it as data:<type>;base64,<base64 bytes> (RFC 2397), or send the bytes as content."


class Decoded(NamedTuple):
    type: str
    content: bytes


def is_data_url(url: str) -> bool:
    """Whether ``url`` is a ``data:`` URL (the scheme in any case)."""
    return url[:5].lower() == "data:"


async def decode(url: str, meter: Meter) -> Decoded:
    """The type and bytes of a ``data:`` URL, within ``meter``'s limits.

    Raises ``UnsupportedAttachmentURL`` naming the attachment for a URL
    without a comma, with bad percent-encoding or bad base64, or whose bytes
    contradict its type; ``AttachmentTooLarge`` before decoding more than the
    caps allow.
    """
    source = meter.source
    header, comma, data = url[5:].partition(",")
    if not comma:
        raise _malformed(source, "it has no comma between its media type and its data")
    if _BAD_ESCAPE.search(data):
        raise _malformed(source, "its data has a '%' that is not followed by two hex digits")
    parameters = header.split(";")
    encoded = parameters[-1].strip().lower() == "base64"
    if encoded:
        parameters = parameters[:-1]
    declared = mime.normalise(";".join(parameters)) if parameters[0].strip() else None
    raw = unquote_to_bytes(data)
    if encoded:
        raw = _WHITESPACE.sub(b"", raw)
        meter.declare(_base64_size(raw, source), "decoded size")
        content = await _off_loop_if_large(len(raw), lambda: _b64decode(raw, source))
    else:
        meter.declare(len(raw), "decoded size")
        content = raw
    meter.add(len(content))
    return Decoded(_checked_type(declared, content, source), content)


def _base64_size(raw: bytes, source: str) -> int:
    if len(raw) % 4:
        raise _malformed(source, "its base64 data is not a whole number of 4-character groups")
    return len(raw) // 4 * 3 - len(raw) + len(raw.rstrip(b"="))


def _b64decode(raw: bytes, source: str) -> bytes:
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error as error:
        raise _malformed(source, f"its base64 data is invalid ({error})") from None


async def _off_loop_if_large(size: int, work: Callable[[], bytes]) -> bytes:
    return work() if size <= ON_LOOP_LIMIT else await off_loop(work)


def _checked_type(declared: str | None, content: bytes, source: str) -> str:
    sniffed = mime.sniff(content[: mime.SNIFF_BYTES])
    if declared is None or declared == "application/octet-stream":
        return sniffed or declared or _DEFAULT_TYPE
    if (
        sniffed is not None
        and sniffed != declared
        and declared.startswith(_SNIFFABLE)
        and sniffed.startswith(_SNIFFABLE)
    ):
        raise _malformed(source, f"it says {declared}, but its bytes are {sniffed}")
    return declared


def _malformed(source: str, problem: str) -> UnsupportedAttachmentURL:
    return UnsupportedAttachmentURL(
        f"Attachment {source} is not a usable data: URL: {problem}. {_FIX}", source=source
    )
