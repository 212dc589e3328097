"""Real ``redis-server`` processes on 127.0.0.1, for the fleet tier's tests.

``redis_server`` is one server for the session, emptied before each test that
uses it. ``start_redis(password=..., maxmemory=...)`` starts a test's own
server (with ``requirepass``, or a ``maxmemory`` under ``noeviction``), which
the test may stop and start again on the same port; it is stopped with the
test. Persistence is off: a restarted server is empty. Each server also
listens on a Unix socket (:attr:`RedisServer.socket`).

Without ``redis-server`` the tests are skipped, saying how to install it; under
CI (the ``CI`` environment variable set) they fail instead: CI must run them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import pytest

__all__ = ["RedisServer", "redis_server", "start_redis"]

_INSTALL = "apt-get install -y redis-server"


def _binary() -> str:
    """The ``redis-server`` on PATH; skips the test (fails it under CI) if there is none."""
    found = shutil.which("redis-server")
    if found is None:
        message = (
            "redis-server is not installed; the fleet tier's tests run a real one. "
            f"Install it with `{_INSTALL}` (Debian, Ubuntu)."
        )
        if os.environ.get("CI"):
            pytest.fail(f"{message} CI must install it (.ci/run does).", pytrace=False)
        pytest.skip(message)
    return found


class RedisServer:
    """One ``redis-server`` on a free loopback port, persistence off."""

    def __init__(self, *, password: str | None = None, maxmemory: str | None = None) -> None:
        self._binary = _binary()
        self.password = password
        self.maxmemory = maxmemory
        self.port = 0
        # Short: a Unix socket's path must fit in 108 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="laa-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:<port>/0``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def socket(self) -> Path:
        return self.directory / "redis.sock"

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> Self:
        """Start the server: on a free port the first time, then on the same one."""
        for _ in range(1 if self.port else 5):  # a free port may be taken meanwhile
            port = self.port or _free_port()
            process = subprocess.Popen(
                [self._binary, *self._arguments(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if _answers(process, port):
                self.port, self._process = port, process
                return self
            _end(process)
        log = self.directory / "redis.log"
        told = log.read_text(errors="replace") if log.exists() else "(no log)"
        raise RuntimeError(f"redis-server did not start on port {port}: {told}")

    def stop(self) -> None:
        """Stop the server (it may be started again)."""
        if self._process is not None:
            _end(self._process)
            self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def flush(self) -> None:
        """Empty every database."""
        _ask(self.port, self.password, b"FLUSHALL")

    def _arguments(self, port: int) -> list[str]:
        arguments = [
            "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no",
            "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log"),
            "--unixsocket", str(self.socket), "--unixsocketperm", "700",
        ]  # fmt: skip
        if self.password is not None:
            arguments += ["--requirepass", self.password]
        if self.maxmemory is not None:
            arguments += ["--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction"]
        return arguments


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _ask(port: int, password: str | None, *command: bytes) -> bytes:
    """The first line of the server's answer to ``command`` (after ``AUTH``, if needed)."""
    commands = [(b"AUTH", password.encode()), command] if password else [command]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        for each in commands:
            connection.sendall(b"*%d\r\n" % len(each))
            for part in each:
                connection.sendall(b"$%d\r\n%s\r\n" % (len(part), part))
        answer = b""
        while answer.count(b"\r\n") < len(commands):
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n")[len(commands) - 1]


def _answers(process: subprocess.Popen[bytes], port: int) -> bool:
    """Whether the server answers ``PING`` (``NOAUTH`` counts) before it exits or 10 s pass."""
    give_up = time.monotonic() + 10
    while process.poll() is None and time.monotonic() < give_up:
        with contextlib.suppress(OSError):
            if _ask(port, None, b"PING").startswith((b"+PONG", b"-NOAUTH")):
                return True
        time.sleep(0.01)
    return False


def _end(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def _redis_session_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_server(_redis_session_server: RedisServer) -> RedisServer:
    """The session's server, emptied: for tests that neither stop it nor reconfigure it."""
    _redis_session_server.flush()
    return _redis_session_server


@pytest.fixture
def start_redis() -> Iterator[Callable[..., RedisServer]]:
    """Starts a server of the test's own (``password=``, ``maxmemory=``); it stops with the
    test. Blocking: call it through ``asyncio.to_thread`` inside an async test."""
    servers: list[RedisServer] = []

    def start(*, password: str | None = None, maxmemory: str | None = None) -> RedisServer:
        server = RedisServer(password=password, maxmemory=maxmemory)
        servers.append(server)  # closed at the end, even if it does not start
        return server.start()

    yield start
    for server in servers:
        server.close()
