"""The shipped FileServer plus every way a server can misbehave, for this project's tests.

:class:`HostileFileServer` is :class:`~llm_async_attachments.testing.FileServer`
with ``Range`` and gzip-encoded files (``add(..., gzip=True)``), the ``Host``
header of each request in :attr:`HostileFileServer.hosts`, and these routes:

* ``/status/<code>``                      respond with that status code
* ``/redirect/<n>?to=<path>``            302 chain of ``n + 1`` hops ending at ``to``
* ``/redirect-loop``                     302 to itself
* ``/redirect-scheme``                   302 to ``file:///etc/passwd``
* ``/redirect-to?url=<url>``             302 to any URL
* ``/endless``                           chunked zeros forever
* ``/gzip-bomb?size=<n>``                gzip of ``n`` zero bytes
* ``/deflate-bomb?size=<n>``             zlib/deflate of ``n`` zero bytes
* ``/short?declared=<n>&sent=<m>``       Content-Length ``n``, ``m`` bytes, then close
* ``/stall-after-headers``               headers (Content-Length 100), then nothing
* ``/reset-mid-body?declared=<n>&sent=<m>``  ``m`` of ``n`` bytes, then a TCP reset
* ``/head-hangs``                        HEAD never answers; GET sends a PDF header
* ``/disagree?head=<type>&get=<type>``   HEAD and GET declare different types
* ``/headers/<kind>``                    absurd headers, see ``_ABSURD``
* ``/flaky?fail=<n>&status=<code>&retry_after=<s>``  the first ``n`` requests fail
* ``/gzip/<damage>``                     a gzip body damaged: ``truncated``, ``bad-crc``,
  ``trailing`` (junk after the member), ``endless`` (zeros after a tiny member, forever)

The shipped server's ``/big`` and ``/drip`` are there too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import http
import itertools
import select
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from typing import ClassVar, cast
from urllib.parse import urlencode, urlsplit

from llm_async_attachments.testing.server import (
    BadRequest,
    FileHandler,
    FileServer,
    StaticFile,
    type_header,
)

__all__ = ["CHUNK_SIZE", "HostileFileServer", "compressed_zeros"]

CHUNK_SIZE = 64 * 1024
_CHUNKED_ZEROS = b"%x\r\n" % CHUNK_SIZE + bytes(CHUNK_SIZE) + b"\r\n"
_BOMB_BLOCK = 1024 * 1024
_STALL_SECONDS = 60.0
_ENCODING_WBITS = {"gzip": 31, "deflate": 15}

_PDF_HEAD = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
# Headers no sane server sends; each a way a client's parser or caps can be fooled.
_ABSURD: dict[str, list[tuple[str, str]]] = {
    "negative-length": [("Content-Type", "image/png"), ("Content-Length", "-1")],
    "bad-length": [("Content-Type", "image/png"), ("Content-Length", "lots")],
    "two-lengths": [
        ("Content-Type", "image/png"),
        ("Content-Length", "64"),
        ("Content-Length", "999999999"),
    ],
    "huge-length": [("Content-Type", "image/png"), ("Content-Length", "9" * 40)],
    "two-types": [
        ("Content-Type", "image/png"),
        ("Content-Type", "application/pdf"),
        ("Content-Length", "64"),
    ],
    "huge-type": [("Content-Type", "image/" + "x" * 60_000), ("Content-Length", "64")],
    "huge-block": [
        *((f"X-Padding-{i}", "y" * 1000) for i in range(1000)),
        ("Content-Length", "64"),
    ],
    "non-ascii-type": [("Content-Type", "image/p\u00e9ng"), ("Content-Length", "64")],
}
_bomb_cache: dict[tuple[str, int], bytes] = {}
_bomb_lock = threading.Lock()


def _compress(data: bytes, encoding: str) -> bytes:
    """Compress ``data`` as ``gzip`` or ``deflate`` (zlib format)."""
    comp = zlib.compressobj(6, zlib.DEFLATED, _ENCODING_WBITS[encoding])
    return comp.compress(data) + comp.flush()


def compressed_zeros(encoding: str, size: int) -> bytes:
    """Return ``size`` zero bytes compressed as ``gzip`` or ``deflate``.

    Compressed in 1 MiB blocks (a 1 GiB bomb never needs 1 GiB of memory) and
    cached per ``(encoding, size)``; 1 GiB takes a few seconds the first time.
    """
    key = (encoding, size)
    with _bomb_lock:
        cached = _bomb_cache.get(key)
        if cached is None:
            comp = zlib.compressobj(9, zlib.DEFLATED, _ENCODING_WBITS[encoding])
            block = memoryview(bytes(_BOMB_BLOCK))
            parts: list[bytes] = []
            remaining = size
            while remaining > 0:
                n = min(remaining, _BOMB_BLOCK)
                parts.append(comp.compress(block[:n]))
                remaining -= n
            parts.append(comp.flush())
            cached = _bomb_cache[key] = b"".join(parts)
    return cached


def _octets(length: int) -> list[tuple[str, str]]:
    """Headers for an application/octet-stream body of ``length`` bytes."""
    return [("Content-Type", "application/octet-stream"), ("Content-Length", str(length))]


@dataclasses.dataclass(frozen=True)
class _EncodedFile(StaticFile):
    """A registered file whose ``body`` is already encoded (``Content-Encoding``)."""

    encoding: str = "gzip"


class _Unsatisfiable(Exception):
    """Raised for a Range outside the file; answered with 416."""


def _parse_range(value: str, length: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=a-b`` range; ``None`` means ignore the header."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return None
    try:
        if not first:
            suffix = int(last)
            if suffix <= 0:
                raise _Unsatisfiable
            start, end = max(length - suffix, 0), length - 1
        else:
            start = int(first)
            end = int(last) if last else length - 1
            if last and end < start:
                return None
    except ValueError:
        return None
    if start >= length:
        raise _Unsatisfiable
    return start, min(end, length - 1)


class _HostileHandler(FileHandler):
    server_version = "HostileFileServer/1.0"

    def route(self, path: str, head: bool) -> None:
        if self.owner._lookup(path) is not None:
            super().route(path, head)
        elif path.startswith("/status/"):
            self._status(path.removeprefix("/status/"), head)
        elif path.startswith("/redirect/"):
            self._redirect_chain(path.removeprefix("/redirect/"), head)
        elif path.startswith("/gzip/"):
            self._damaged_gzip(path.removeprefix("/gzip/"), head)
        elif path.startswith("/headers/"):
            self._absurd_headers(path.removeprefix("/headers/"), head)
        elif path in self._ROUTES:
            self._ROUTES[path](self, head)
        else:
            super().route(path, head)

    def send_file(self, f: StaticFile, head: bool) -> None:
        if isinstance(f, _EncodedFile):  # Range is ignored for encoded bodies
            headers = [*type_header(f, head), *f.headers, ("Content-Encoding", f.encoding)]
            self.send_body(200, headers, f.body, head)
            return
        headers = [*type_header(f, head), *f.headers, ("Accept-Ranges", "bytes")]
        status, body = 200, memoryview(f.body)
        range_header = self.headers.get("Range")
        if range_header and not head:
            try:
                byte_range = _parse_range(range_header, len(body))
            except _Unsatisfiable:
                unsatisfiable = [("Content-Range", f"bytes */{len(body)}"), ("Content-Length", "0")]
                self.start(416, unsatisfiable)
                return
            if byte_range is not None:
                start, end = byte_range
                status = 206
                headers.append(("Content-Range", f"bytes {start}-{end}/{len(body)}"))
                body = body[start : end + 1]
        self.send_body(status, headers, body, head)

    def _client_gone(self) -> bool:
        """True if the peer has closed its side of the connection."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _status(self, raw: str, head: bool) -> None:
        try:
            code = int(raw)
        except ValueError:
            raise BadRequest("invalid status code") from None
        if not 200 <= code <= 599:
            raise BadRequest("status code must be 200-599")
        if code in (204, 304):
            self.start(code, [])
            return
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = "Custom Status"
        self.text(code, f"{code} {phrase}\n", head)

    def _redirect(self, location: str, head: bool) -> None:
        del head  # redirects never carry a body
        self.start(302, [("Location", location), ("Content-Length", "0")])

    def _redirect_chain(self, raw: str, head: bool) -> None:
        try:
            hops = int(raw)
        except ValueError:
            raise BadRequest("invalid redirect count") from None
        if hops < 0:
            raise BadRequest("negative redirect count")
        target = self.query.get("to", "/status/200")
        if hops == 0:
            self._redirect(target, head)
        else:
            self._redirect(f"/redirect/{hops - 1}?{urlencode({'to': target})}", head)

    def _redirect_loop(self, head: bool) -> None:
        self._redirect("/redirect-loop", head)

    def _redirect_scheme(self, head: bool) -> None:
        self._redirect("file:///etc/passwd", head)

    def _redirect_to(self, head: bool) -> None:
        self._redirect(self.query.get("url", "/status/200"), head)

    def _endless(self, head: bool) -> None:
        self.start(
            200,
            [("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")],
        )
        if head:
            return
        self.stream(itertools.repeat(_CHUNKED_ZEROS))  # only ends on disconnect/stop

    def _bomb(self, encoding: str, head: bool) -> None:
        body = memoryview(compressed_zeros(encoding, self.int_param("size")))
        headers = [("Content-Type", "application/octet-stream"), ("Content-Encoding", encoding)]
        self.send_body(200, headers, body, head)

    def _damaged_gzip(self, damage: str, head: bool) -> None:
        member = gzip.compress(b"\x89PNG\r\n\x1a\n" + bytes(4096))
        bodies = {
            "truncated": member[:-6],
            "bad-crc": member[:-8] + b"\0\0\0\0" + member[-4:],
            "trailing": member + b"trailing junk",
        }
        headers = [("Content-Type", "image/png"), ("Content-Encoding", "gzip")]
        if damage in bodies:
            self.send_body(200, headers, memoryview(bodies[damage]), head)
            return
        if damage != "endless":
            raise BadRequest(f"unknown damage {damage!r}")
        self.start(200, [*headers, ("Transfer-Encoding", "chunked")])
        if head:
            return
        first = b"%x\r\n%s\r\n" % (len(member), member)
        self.stream(itertools.chain([first], itertools.repeat(_CHUNKED_ZEROS)))

    def _gzip_bomb(self, head: bool) -> None:
        self._bomb("gzip", head)

    def _deflate_bomb(self, head: bool) -> None:
        self._bomb("deflate", head)

    def _short(self, head: bool) -> None:
        declared, sent = self.int_param("declared"), self.int_param("sent")
        if sent >= declared:
            raise BadRequest("sent must be smaller than declared")
        self.start(200, _octets(declared))
        if head:
            return
        self.stream([bytes(sent)])
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _stall_after_headers(self, head: bool) -> None:
        self.start(200, _octets(100))
        if head:
            return
        self.close_connection = True
        deadline = time.monotonic() + _STALL_SECONDS
        while time.monotonic() < deadline:
            if self._client_gone() or self.owner.stopping.wait(0.1):
                return

    def _reset_mid_body(self, head: bool) -> None:
        declared, sent = self.int_param("declared"), self.int_param("sent")
        self.start(200, _octets(declared))
        if head:
            return
        self.stream([bytes(sent)])
        self.close_connection = True
        with contextlib.suppress(OSError):  # linger 0: close() sends RST, not FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _head_hangs(self, head: bool) -> None:
        if head:
            self.close_connection = True
            while not (self._client_gone() or self.owner.stopping.wait(0.1)):
                pass
            return
        body = _PDF_HEAD
        self.start(200, [("Content-Type", "application/pdf"), ("Content-Length", str(len(body)))])
        self.wfile.write(body)

    def _disagree(self, head: bool) -> None:
        content_type = self.query.get("head" if head else "get", "application/octet-stream")
        self.start(200, [("Content-Type", content_type), ("Content-Length", "4")])
        if not head:
            self.wfile.write(b"\0\0\0\0")

    def _absurd_headers(self, raw: str, head: bool) -> None:
        headers = _ABSURD.get(raw)
        if headers is None:
            raise BadRequest("unknown header kind")
        self.close_connection = True
        self.start(200, headers)
        if not head:
            self.stream([bytes(64)])

    def _flaky(self, head: bool) -> None:
        failures = self.int_param("fail")
        seen = cast(HostileFileServer, self.owner)._hit(self.path)
        if seen <= failures:
            status = self.int_param("status", 503)
            extra = (
                [("Retry-After", self.query["retry_after"])] if "retry_after" in self.query else []
            )
            self.text(status, "try again\n", head, extra)
        else:
            self.text(200, "finally\n", head)

    _ROUTES: ClassVar[dict[str, Callable[[_HostileHandler, bool], None]]] = {
        "/redirect-to": _redirect_to,
        "/reset-mid-body": _reset_mid_body,
        "/head-hangs": _head_hangs,
        "/disagree": _disagree,
        "/flaky": _flaky,
        "/redirect-loop": _redirect_loop,
        "/redirect-scheme": _redirect_scheme,
        "/endless": _endless,
        "/gzip-bomb": _gzip_bomb,
        "/deflate-bomb": _deflate_bomb,
        "/short": _short,
        "/stall-after-headers": _stall_after_headers,
    }


class HostileFileServer(FileServer):
    """:class:`FileServer` with the hostile routes, ``Range``, gzip and ``Host`` recording."""

    handler = _HostileHandler

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.hosts: list[str] = []
        self.authorizations: list[str | None] = []  # each request's Authorization header
        """The ``Host`` header of every request, in the order of :attr:`requests`."""
        self._hits: dict[str, int] = {}

    def add(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str | None = "application/octet-stream",
        latency: float = 0.0,
        head_status: int | None = None,
        headers: Iterable[tuple[str, str]] = (),
        gzip: bool = False,
        head_type: str | None = None,
    ) -> str:
        """:meth:`FileServer.add`; ``gzip`` sends the body gzip-encoded (``Range`` is ignored)."""
        url = super().add(
            path,
            body,
            content_type=content_type,
            latency=latency,
            head_status=head_status,
            headers=headers,
            head_type=head_type,
        )
        if gzip:
            encoded = _EncodedFile(
                _compress(body, "gzip"), content_type, latency, head_status, tuple(headers)
            )
            self.store(path, encoded)
        return url

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.hosts.clear()
            self.authorizations.clear()
            self._hits.clear()

    def _record(self, request: FileHandler) -> None:
        with self._lock:
            self.requests.append((request.command, urlsplit(request.path).path))
            self.hosts.append(request.headers.get("Host", ""))
            self.authorizations.append(request.headers.get("Authorization"))

    def _hit(self, key: str) -> int:
        """Count a request to ``key``; return how many there have been."""
        with self._lock:
            seen = self._hits[key] = self._hits.get(key, 0) + 1
        return seen
