"""A real threaded HTTP/1.1 server on 127.0.0.1 for tests.

Serves in-memory static files registered with :meth:`FileServer.add` plus a set
of built-in misbehaving routes (endless bodies, compression bombs, short
bodies, slow drips, stalls, redirects). Every request is recorded as
``(method, path)`` in :attr:`FileServer.requests`.

Built-in routes (all accept ``?latency=<seconds>``):

* ``/status/<code>``                      respond with that status code
* ``/redirect/<n>?to=<path>``            302 chain of ``n + 1`` hops ending at ``to``
* ``/redirect-loop``                     302 to itself
* ``/redirect-scheme``                   302 to ``file:///etc/passwd``
* ``/endless``                           chunked zeros forever
* ``/big?size=<n>``                      ``n`` zero bytes with Content-Length
* ``/gzip-bomb?size=<n>``                gzip of ``n`` zero bytes
* ``/deflate-bomb?size=<n>``             zlib/deflate of ``n`` zero bytes
* ``/short?declared=<n>&sent=<m>``       Content-Length ``n``, ``m`` bytes, then close
* ``/drip?size=<n>&interval=<s>``        one byte every ``s`` seconds
* ``/stall-after-headers``               headers (Content-Length 100), then nothing
* ``/redirect-to?url=<url>``             302 to any URL
* ``/reset-mid-body?declared=<n>&sent=<m>``  ``m`` of ``n`` bytes, then a TCP reset
* ``/head-hangs``                        HEAD never answers; GET sends a PDF header
* ``/disagree?head=<type>&get=<type>``   HEAD and GET declare different types
* ``/headers/<kind>``                    absurd headers, see ``_ABSURD``
* ``/flaky?fail=<n>&status=<code>&retry_after=<s>``  the first ``n`` requests fail
"""

from __future__ import annotations

import contextlib
import http
import itertools
import select
import socket
import socketserver
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

__all__ = [
    "CHUNK_SIZE",
    "FileServer",
    "ServerThread",
    "TrackingHTTPServer",
    "compressed_zeros",
]

HOST = "127.0.0.1"
CHUNK_SIZE = 64 * 1024
_ZEROS = bytes(CHUNK_SIZE)
_CHUNKED_ZEROS = b"%x\r\n" % CHUNK_SIZE + _ZEROS + b"\r\n"
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


@dataclass(frozen=True)
class _StaticFile:
    """A registered in-memory file; ``body`` is exactly what GET sends."""

    body: bytes
    content_type: str | None
    latency: float
    head_status: int | None
    encoding: str | None


class _BadRequest(Exception):
    """Raised for malformed query parameters; answered with 400."""


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


class _Handler(BaseHTTPRequestHandler):
    """Request handler; one instance per connection."""

    protocol_version = "HTTP/1.1"
    server_version = "TestFileServer/1.0"
    timeout = 30.0  # bounds idle keep-alive connections and blocked writes

    server: _HTTPServer
    query: dict[str, str]

    # -- plumbing ---------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's
        # algorithm and delayed ACKs add ~40 ms to every keep-alive response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr logging."""

    @property
    def owner(self) -> FileServer:
        return self.server.owner

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _other_method(self) -> None:
        """Record and refuse any method other than GET/HEAD."""
        path = urlsplit(self.path).path
        self.owner._record(self.command, path)
        length = self.headers.get("Content-Length")
        if length is not None and length.isdigit():
            self.rfile.read(int(length))
        elif self.headers.get("Transfer-Encoding"):
            self.close_connection = True
        self._text(405, "method not allowed\n", head=False, extra=[("Allow", "GET, HEAD")])

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _other_method

    def _dispatch(self, *, head: bool) -> None:
        split = urlsplit(self.path)
        path = split.path
        self.owner._record(self.command, path, self.headers.get("Host", ""))
        self.query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            latency = self._float("latency", 0.0)
            if latency > 0 and self._sleep(latency):
                return
            static = self.owner._lookup(path)
            if static is not None:
                self._serve_static(static, head)
            elif path.startswith("/status/"):
                self._status(path.removeprefix("/status/"), head)
            elif path.startswith("/redirect/"):
                self._redirect_chain(path.removeprefix("/redirect/"), head)
            elif path.startswith("/headers/"):
                self._absurd_headers(path.removeprefix("/headers/"), head)
            elif path in self._ROUTES:
                self._ROUTES[path](self, head)
            else:
                self._text(404, "not found\n", head)
        except _BadRequest as exc:
            self._text(400, f"bad request: {exc}\n", head)

    def _sleep(self, seconds: float) -> bool:
        """Sleep; return True (and drop the connection) if the server is stopping."""
        if self.owner.stopping.wait(seconds):
            self.close_connection = True
            return True
        return False

    def _int(self, name: str, default: int | None = None) -> int:
        raw = self.query.get(name)
        if raw is None:
            if default is None:
                raise _BadRequest(f"missing {name}")
            return default
        try:
            value = int(raw)
        except ValueError:
            raise _BadRequest(f"invalid {name}") from None
        if value < 0:
            raise _BadRequest(f"negative {name}")
        return value

    def _float(self, name: str, default: float) -> float:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise _BadRequest(f"invalid {name}") from None
        if not value >= 0:
            raise _BadRequest(f"negative {name}")
        return value

    def _start(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        """Send the status line and headers, and flush them."""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def _text(
        self,
        status: int,
        text: str,
        head: bool,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        body = text.encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *extra,
        ]
        self._start(status, headers)
        if not head:
            self.wfile.write(body)

    def _stream(self, chunks: Iterable[bytes | memoryview]) -> bool:
        """Write chunks until done, disconnect or stop; True if all were sent."""
        try:
            for chunk in chunks:
                if self.owner.stopping.is_set():
                    break
                self.wfile.write(chunk)
            else:
                return True
        except OSError:  # BrokenPipe, ConnectionReset, timeouts, closed socket
            pass
        self.close_connection = True
        return False

    def _client_gone(self) -> bool:
        """True if the peer has closed its side of the connection."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # -- static files -----------------------------------------------------

    def _serve_static(self, f: _StaticFile, head: bool) -> None:
        if f.latency > 0 and self._sleep(f.latency):
            return
        if head and f.head_status is not None:
            self._start(f.head_status, [("Content-Length", "0")])
            return
        headers: list[tuple[str, str]] = []
        if f.content_type is not None:
            headers.append(("Content-Type", f.content_type))
        if f.encoding is not None:
            headers.append(("Content-Encoding", f.encoding))
        else:
            headers.append(("Accept-Ranges", "bytes"))
        status, body = 200, memoryview(f.body)
        range_header = self.headers.get("Range")
        if range_header and not head and f.encoding is None:
            try:
                byte_range = _parse_range(range_header, len(body))
            except _Unsatisfiable:
                unsatisfiable = [("Content-Range", f"bytes */{len(body)}"), ("Content-Length", "0")]
                self._start(416, unsatisfiable)
                return
            if byte_range is not None:
                start, end = byte_range
                status = 206
                headers.append(("Content-Range", f"bytes {start}-{end}/{len(body)}"))
                body = body[start : end + 1]
        headers.append(("Content-Length", str(len(body))))
        self._start(status, headers)
        if not head:
            self._stream(body[i : i + CHUNK_SIZE] for i in range(0, len(body), CHUNK_SIZE))

    # -- built-in routes --------------------------------------------------

    def _status(self, raw: str, head: bool) -> None:
        try:
            code = int(raw)
        except ValueError:
            raise _BadRequest("invalid status code") from None
        if not 200 <= code <= 599:
            raise _BadRequest("status code must be 200-599")
        if code in (204, 304):
            self._start(code, [])
            return
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = "Custom Status"
        self._text(code, f"{code} {phrase}\n", head)

    def _redirect(self, location: str, head: bool) -> None:
        del head  # redirects never carry a body
        self._start(302, [("Location", location), ("Content-Length", "0")])

    def _redirect_chain(self, raw: str, head: bool) -> None:
        try:
            hops = int(raw)
        except ValueError:
            raise _BadRequest("invalid redirect count") from None
        if hops < 0:
            raise _BadRequest("negative redirect count")
        target = self.query.get("to", "/status/200")
        if hops == 0:
            self._redirect(target, head)
        else:
            self._redirect(f"/redirect/{hops - 1}?{urlencode({'to': target})}", head)

    def _redirect_loop(self, head: bool) -> None:
        self._redirect("/redirect-loop", head)

    def _redirect_scheme(self, head: bool) -> None:
        self._redirect("file:///etc/passwd", head)

    def _endless(self, head: bool) -> None:
        self._start(
            200,
            [("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")],
        )
        if head:
            return
        self._stream(itertools.repeat(_CHUNKED_ZEROS))  # only ends on disconnect/stop

    def _big(self, head: bool) -> None:
        size = self._int("size")
        self._start(200, _octets(size))
        if head:
            return
        full, rest = divmod(size, CHUNK_SIZE)
        chunks = itertools.chain(itertools.repeat(_ZEROS, full), [_ZEROS[:rest]] if rest else [])
        self._stream(chunks)

    def _bomb(self, encoding: str, head: bool) -> None:
        body = memoryview(compressed_zeros(encoding, self._int("size")))
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Encoding", encoding),
            ("Content-Length", str(len(body))),
        ]
        self._start(200, headers)
        if not head:
            self._stream(body[i : i + CHUNK_SIZE] for i in range(0, len(body), CHUNK_SIZE))

    def _gzip_bomb(self, head: bool) -> None:
        self._bomb("gzip", head)

    def _deflate_bomb(self, head: bool) -> None:
        self._bomb("deflate", head)

    def _short(self, head: bool) -> None:
        declared, sent = self._int("declared"), self._int("sent")
        if sent >= declared:
            raise _BadRequest("sent must be smaller than declared")
        self._start(200, _octets(declared))
        if head:
            return
        self._stream([bytes(sent)])
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _drip(self, head: bool) -> None:
        size = self._int("size")
        interval = self._float("interval", 1.0)
        self._start(200, _octets(size))
        if head:
            return
        try:
            for i in range(size):
                if i and self._sleep(interval):
                    return
                self.wfile.write(b"\0")
        except OSError:
            self.close_connection = True

    def _stall_after_headers(self, head: bool) -> None:
        self._start(200, _octets(100))
        if head:
            return
        self.close_connection = True
        deadline = time.monotonic() + _STALL_SECONDS
        while time.monotonic() < deadline:
            if self._client_gone() or self.owner.stopping.wait(0.1):
                return

    def _redirect_to(self, head: bool) -> None:
        self._redirect(self.query.get("url", "/status/200"), head)

    def _reset_mid_body(self, head: bool) -> None:
        declared, sent = self._int("declared"), self._int("sent")
        self._start(200, _octets(declared))
        if head:
            return
        self._stream([bytes(sent)])
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
        self._start(200, [("Content-Type", "application/pdf"), ("Content-Length", str(len(body)))])
        self.wfile.write(body)

    def _disagree(self, head: bool) -> None:
        content_type = self.query.get("head" if head else "get", "application/octet-stream")
        self._start(200, [("Content-Type", content_type), ("Content-Length", "4")])
        if not head:
            self.wfile.write(b"\0\0\0\0")

    def _absurd_headers(self, raw: str, head: bool) -> None:
        headers = _ABSURD.get(raw)
        if headers is None:
            raise _BadRequest("unknown header kind")
        self.close_connection = True
        self._start(200, headers)
        if not head:
            self._stream([bytes(64)])

    def _flaky(self, head: bool) -> None:
        failures = self._int("fail")
        key = self.path
        with self.owner._lock:
            seen = self.owner._hits[key] = self.owner._hits.get(key, 0) + 1
        if seen <= failures:
            status = self._int("status", 503)
            extra = (
                [("Retry-After", self.query["retry_after"])] if "retry_after" in self.query else []
            )
            self._text(status, "try again\n", head, extra)
        else:
            self._text(200, "finally\n", head)

    _ROUTES: ClassVar[dict[str, Callable[[_Handler, bool], None]]] = {
        "/redirect-to": _redirect_to,
        "/reset-mid-body": _reset_mid_body,
        "/head-hangs": _head_hangs,
        "/disagree": _disagree,
        "/flaky": _flaky,
        "/redirect-loop": _redirect_loop,
        "/redirect-scheme": _redirect_scheme,
        "/endless": _endless,
        "/big": _big,
        "/gzip-bomb": _gzip_bomb,
        "/deflate-bomb": _deflate_bomb,
        "/short": _short,
        "/drip": _drip,
        "/stall-after-headers": _stall_after_headers,
    }


class TrackingHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server on a loopback host that tracks its open connections.

    Stopping drops them (an idle keep-alive would otherwise hold its handler
    thread), and ``peak_connections`` tells how many were open at once.
    """

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, host: str, handler: type[BaseHTTPRequestHandler]) -> None:
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self.peak_connections = 0
        if ":" in host:
            self.address_family = socket.AF_INET6
        self._host = host
        super().__init__((host, 0), handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup (getfqdn)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name = self._host
        self.server_port = self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
            self.peak_connections = max(self.peak_connections, len(self._connections))
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def open_connections(self) -> int:
        with self._conn_lock:
            return len(self._connections)

    def close_connections(self) -> None:
        """Shut down every open client connection (unblocks idle keep-alives)."""
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class ServerThread:
    """Runs a :class:`TrackingHTTPServer` on a daemon thread: ``start``, ``stop``, ``with``."""

    def __init__(self) -> None:
        self._server: TrackingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _make_server(self) -> TrackingHTTPServer:
        raise NotImplementedError

    def _started(self, port: int) -> None:
        """Called once the server is bound, with its port."""

    def _stopping(self) -> None:
        """Called before the server shuts down."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Bind an ephemeral loopback port and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        server = self._make_server()
        port = server.server_address[1]
        self._started(port)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-{port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and join the serving thread."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None


class _HTTPServer(TrackingHTTPServer):
    """The file server's: quiet on client disconnects."""

    block_on_close = False

    def __init__(self, owner: FileServer) -> None:
        self.owner = owner
        super().__init__(owner.host, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore socket errors (client disconnects) and anything during shutdown."""
        if isinstance(sys.exc_info()[1], OSError) or self.owner.stopping.is_set():
            return
        super().handle_error(request, client_address)


class FileServer(ServerThread):
    """In-memory HTTP/1.1 test server on loopback with an ephemeral port.

    ``host`` is ``127.0.0.1`` or, for IPv6, ``::1``.
    """

    def __init__(self, host: str = HOST) -> None:
        if host not in (HOST, "::1"):
            raise ValueError("FileServer binds loopback only: 127.0.0.1 or ::1")
        super().__init__()
        self.host = host
        self.base_url = ""
        self.requests: list[tuple[str, str]] = []
        self.hosts: list[str] = []
        self._hits: dict[str, int] = {}
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._files: dict[str, _StaticFile] = {}

    def _make_server(self) -> TrackingHTTPServer:
        self.stopping.clear()
        return _HTTPServer(self)

    def _started(self, port: int) -> None:
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{netloc}:{port}"

    def _stopping(self) -> None:
        self.stopping.set()

    def url(self, path: str) -> str:
        """Absolute URL for ``path`` on this server."""
        if not path.startswith("/"):
            path = "/" + path
        return self.base_url + path

    @property
    def peak_connections(self) -> int:
        """The most client connections that were open at once, since start or reset."""
        return self._server.peak_connections if self._server else 0

    def open_connections(self) -> int:
        """Client connections open now."""
        return self._server.open_connections() if self._server else 0

    def reset(self) -> None:
        """Forget recorded requests, registered files and the connection peak."""
        if self._server is not None:
            self._server.peak_connections = self._server.open_connections()
        with self._lock:
            self.requests.clear()
            self.hosts.clear()
            self._hits.clear()
            self._files.clear()

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """Number of recorded requests matching ``method`` and/or ``path``.

        ``path`` may also be a full URL; any query string is ignored.
        """
        if path is not None:
            path = urlsplit(path).path
        wanted_method = method.upper() if method is not None else None
        with self._lock:
            return sum(
                1
                for m, p in self.requests
                if (wanted_method is None or m == wanted_method) and (path is None or p == path)
            )

    def add(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str | None = "application/octet-stream",
        latency: float = 0.0,
        head_status: int | None = None,
        gzip: bool = False,
    ) -> str:
        """Register a static file at ``path`` and return its URL.

        ``content_type=None`` sends no Content-Type; ``latency`` delays HEAD and
        GET; ``head_status`` makes HEAD answer that status with an empty body;
        ``gzip`` sends the GET body gzip-encoded (Range is then ignored).
        """
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        encoding = "gzip" if gzip else None
        static = _StaticFile(
            body=_compress(body, "gzip") if gzip else bytes(body),
            content_type=content_type,
            latency=latency,
            head_status=head_status,
            encoding=encoding,
        )
        with self._lock:
            self._files[path] = static
        return self.url(path)

    def _record(self, method: str, path: str, host: str = "") -> None:
        with self._lock:
            self.requests.append((method, path))
            self.hosts.append(host)

    def _lookup(self, path: str) -> _StaticFile | None:
        with self._lock:
            return self._files.get(path) or self._files.get(unquote(path))
