"""A real threaded HTTP/1.1 file server on loopback, for attachment tests.

It serves in-memory files registered with :meth:`FileServer.add`, each with
the knobs a plugin's attachment code must cope with: latency, a refused
``HEAD``, no ``Content-Type``. Two built-in routes serve what no file should
be (all URLs accept ``?latency=<seconds>``):

* ``/big?size=<n>``                ``n`` zero bytes, with that Content-Length
* ``/drip?size=<n>&interval=<s>``  ``n`` zero bytes, one every ``s`` seconds

It is a server, not a mock, so that a blocking download really blocks; it
runs on its own thread so that pyleak can see the event loop stall; it keeps
connections alive, as real servers do, so that a client's pool is exercised.
Every request is recorded as ``(method, path)`` in :attr:`FileServer.requests`,
and :attr:`FileServer.peak_connections` tells how many connections were open
at once. Standard library only.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import socketserver
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FileHandler", "FileServer", "ServerThread", "TrackingHTTPServer"]

HOST = "127.0.0.1"
CHUNK_SIZE = 64 * 1024
_ZEROS = bytes(CHUNK_SIZE)


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


@dataclass(frozen=True)
class StaticFile:
    """A registered in-memory file; ``body`` is exactly what ``GET`` sends."""

    body: bytes
    content_type: str | None
    latency: float
    head_status: int | None
    headers: tuple[tuple[str, str], ...] = ()
    """Extra response headers (``Cache-Control``, ``ETag``, ``Last-Modified``, ...)."""
    head_type: str | None = None
    """The Content-Type ``HEAD`` claims instead of ``content_type`` (a mislabelling server)."""


class BadRequest(Exception):
    """A malformed query parameter; answered with 400."""


class FileHandler(BaseHTTPRequestHandler):
    """Serves a :class:`FileServer`'s files and built-in routes; one instance per connection.

    Subclasses add routes by overriding :meth:`route`.
    """

    protocol_version = "HTTP/1.1"
    server_version = "TestFileServer/1.0"
    timeout = 30.0  # bounds idle keep-alive connections and blocked writes

    server: _HTTPServer
    query: dict[str, str]

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

    def _dispatch(self, *, head: bool) -> None:
        split = urlsplit(self.path)
        self.owner._record(self)
        self.query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            latency = self.float_param("latency", 0.0)
            if latency > 0 and self.sleep(latency):
                return
            self.route(split.path, head)
        except BadRequest as exc:
            self.text(400, f"bad request: {exc}\n", head)

    def route(self, path: str, head: bool) -> None:
        """Answer the request for ``path``: a registered file, a built-in route, or 404."""
        static = self.owner._lookup(path)
        if static is not None:
            self.serve_static(static, head)
        elif path == "/big":
            self._big(head)
        elif path == "/drip":
            self._drip(head)
        else:
            self.text(404, "not found\n", head)

    # -- helpers for routes -------------------------------------------------

    def sleep(self, seconds: float) -> bool:
        """Sleep; return True (and drop the connection) if the server is stopping."""
        if self.owner.stopping.wait(seconds):
            self.close_connection = True
            return True
        return False

    def int_param(self, name: str, default: int | None = None) -> int:
        raw = self.query.get(name)
        if raw is None:
            if default is None:
                raise BadRequest(f"missing {name}")
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"invalid {name}") from None
        if value < 0:
            raise BadRequest(f"negative {name}")
        return value

    def float_param(self, name: str, default: float) -> float:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise BadRequest(f"invalid {name}") from None
        if not value >= 0:
            raise BadRequest(f"negative {name}")
        return value

    def start(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        """Send the status line and headers, and flush them."""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def text(
        self, status: int, text: str, head: bool, extra: Iterable[tuple[str, str]] = ()
    ) -> None:
        body = text.encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *extra,
        ]
        self.start(status, headers)
        if not head:
            self.wfile.write(body)

    def stream(self, chunks: Iterable[bytes | memoryview]) -> bool:
        """Write chunks until done, disconnect or stop; True if all were sent."""
        path = urlsplit(self.path).path
        try:
            for chunk in chunks:
                if self.owner.stopping.is_set():
                    break
                self.wfile.write(chunk)
                self.owner._sent(path, len(chunk))
            else:
                return True
        except OSError:  # BrokenPipe, ConnectionReset, timeouts, closed socket
            pass
        self.close_connection = True
        return False

    def serve_static(self, f: StaticFile, head: bool) -> None:
        """Send ``f`` after its latency, or refuse its ``HEAD`` if it says so."""
        if f.latency > 0 and self.sleep(f.latency):
            return
        if head and f.head_status is not None:
            self.start(f.head_status, [("Content-Length", "0")])
            return
        if _not_modified(f, self.headers):
            self.start(304, list(f.headers))
            return
        self.send_file(f, head)

    def send_file(self, f: StaticFile, head: bool) -> None:
        self.send_body(200, [*type_header(f, head), *f.headers], f.body, head)

    def send_body(
        self, status: int, headers: list[tuple[str, str]], body: bytes | memoryview, head: bool
    ) -> None:
        """Send ``body`` (only its length for ``HEAD``), in chunks."""
        view = memoryview(body)
        self.start(status, [*headers, ("Content-Length", str(len(view)))])
        if not head:
            self.stream(view[i : i + CHUNK_SIZE] for i in range(0, len(view), CHUNK_SIZE))

    def _big(self, head: bool) -> None:
        size = self.int_param("size")
        self.start(200, _octets(size))
        if head:
            return
        full, rest = divmod(size, CHUNK_SIZE)
        self.stream(
            itertools.chain(itertools.repeat(_ZEROS, full), [_ZEROS[:rest]] if rest else [])
        )

    def _drip(self, head: bool) -> None:
        size = self.int_param("size")
        interval = self.float_param("interval", 1.0)
        self.start(200, _octets(size))
        if head:
            return
        try:
            for i in range(size):
                if i and self.sleep(interval):
                    return
                self.wfile.write(b"\0")
        except OSError:
            self.close_connection = True


def _not_modified(f: StaticFile, request: Any) -> bool:
    """Whether a conditional ``GET`` matches ``f``'s ``ETag`` or ``Last-Modified``."""
    kept = {name.lower(): value for name, value in f.headers}
    tags = request.get("If-None-Match")
    if tags is not None and "etag" in kept:
        return tags.strip() == "*" or kept["etag"] in [tag.strip() for tag in tags.split(",")]
    since = request.get("If-Modified-Since")
    return since is not None and since == kept.get("last-modified")


def type_header(f: StaticFile, head: bool = False) -> list[tuple[str, str]]:
    """The Content-Type header of ``f`` (for a ``HEAD``, the one it claims), if it has one."""
    content_type = f.head_type if head and f.head_type else f.content_type
    return [] if content_type is None else [("Content-Type", content_type)]


def _octets(length: int) -> list[tuple[str, str]]:
    """Headers for an application/octet-stream body of ``length`` bytes."""
    return [("Content-Type", "application/octet-stream"), ("Content-Length", str(length))]


class _HTTPServer(TrackingHTTPServer):
    """The file server's: quiet on client disconnects."""

    block_on_close = False

    def __init__(self, owner: FileServer) -> None:
        self.owner = owner
        super().__init__(owner.host, owner.handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore socket errors (client disconnects) and anything during shutdown."""
        if isinstance(sys.exc_info()[1], OSError) or self.owner.stopping.is_set():
            return
        super().handle_error(request, client_address)


class FileServer(ServerThread):
    """An in-memory HTTP/1.1 file server on loopback, on an ephemeral port.

    ``host`` is ``127.0.0.1`` or, for IPv6, ``::1``. Use it as a context
    manager, or ``start()`` and ``stop()`` it.
    """

    handler: type[FileHandler] = FileHandler

    def __init__(self, host: str = HOST) -> None:
        if host not in (HOST, "::1"):
            raise ValueError("FileServer binds loopback only: 127.0.0.1 or ::1")
        super().__init__()
        self.host = host
        self.base_url = ""
        self.requests: list[tuple[str, str]] = []
        """``(method, path)`` of every request, in order of arrival."""
        self.body_bytes: dict[str, int] = {}
        """Body bytes written to clients, per path (the socket took them; the client
        may not have read them all)."""
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._files: dict[str, StaticFile] = {}

    def _make_server(self) -> TrackingHTTPServer:
        self.stopping.clear()
        return _HTTPServer(self)

    def _started(self, port: int) -> None:
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{netloc}:{port}"

    def _stopping(self) -> None:
        self.stopping.set()

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on this server."""
        if not path.startswith("/"):
            path = "/" + path
        return self.base_url + path

    def add(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str | None = "application/octet-stream",
        latency: float = 0.0,
        head_status: int | None = None,
        headers: Iterable[tuple[str, str]] = (),
        head_type: str | None = None,
    ) -> str:
        """Serve ``body`` at ``path`` and return its URL.

        ``content_type=None`` sends no Content-Type; ``latency`` delays each
        ``HEAD`` and ``GET`` by that many seconds; ``head_status`` makes
        ``HEAD`` answer that status (such as 405) with an empty body, and
        ``head_type`` makes it claim another Content-Type (``text/html`` for a
        PDF, as some servers do).
        ``headers`` go with every response: caching headers, say. With an
        ``ETag`` (or ``Last-Modified``) among them, a ``GET`` whose
        ``If-None-Match`` (or ``If-Modified-Since``) matches is answered
        ``304 Not Modified``, with no body.
        """
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        static = StaticFile(
            bytes(body), content_type, latency, head_status, tuple(headers), head_type
        )
        self.store(path, static)
        return self.url(path)

    def store(self, path: str, static: StaticFile) -> None:
        with self._lock:
            self._files[path] = static

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """The number of requests so far with this ``method`` and/or ``path``.

        ``path`` may also be a full URL; any query string is ignored.
        """
        if path is not None:
            path = urlsplit(path).path
        wanted = method.upper() if method is not None else None
        with self._lock:
            return sum(
                1
                for m, p in self.requests
                if (wanted is None or m == wanted) and (path is None or p == path)
            )

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
            self.body_bytes.clear()
            self._files.clear()

    def _sent(self, path: str, size: int) -> None:
        with self._lock:
            self.body_bytes[path] = self.body_bytes.get(path, 0) + size

    def _record(self, request: FileHandler) -> None:
        with self._lock:
            self.requests.append((request.command, urlsplit(request.path).path))

    def _lookup(self, path: str) -> StaticFile | None:
        with self._lock:
            return self._files.get(path) or self._files.get(unquote(path))
