"""A loopback server that answers with exactly the bytes a test gives it.

For what a well-behaved HTTP server cannot be made to send: cookies to see
whether they come back, garbage headers, bodies that do not match their
encoding, answers as a proxy. Each request's head is recorded.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Self

Answer = Callable[[bytes], Iterable[bytes]]
"""Given a request's head (request line and headers), the bytes to send back; an
empty part closes the connection there."""


def response(
    status: int = 200, headers: Iterable[tuple[str, str]] = (), body: bytes = b""
) -> bytes:
    """One HTTP/1.1 response, ``Content-Length`` added unless a header says otherwise."""
    lines = [f"HTTP/1.1 {status} X"]
    named = {name.lower() for name, _ in headers}
    lines += [f"{name}: {value}" for name, value in headers]
    if "content-length" not in named and "transfer-encoding" not in named:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


class RawServer:
    """Serves ``answer(head)`` for every request on 127.0.0.1, keep-alive included."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.heads: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        # shutdown(), unlike close(), wakes a thread blocked in accept() or recv().
        for each in (self._listener, *self._connections):
            with contextlib.suppress(OSError):  # already closed by its thread
                each.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def requests(self) -> int:
        with self._lock:
            return len(self.heads)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = b""
        try:
            while True:
                while b"\r\n\r\n" not in pending:
                    data = connection.recv(65536)
                    if not data:
                        return
                    pending += data
                head, _, pending = pending.partition(b"\r\n\r\n")
                with self._lock:
                    self.heads.append(head)
                for part in self.answer(head):
                    if not part:
                        return
                    connection.sendall(part)
        except OSError:
            return
        finally:
            connection.close()
