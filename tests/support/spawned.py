"""A HostileFileServer in a child process, for measurements the server must not disturb.

Benchmarks measure event-loop stalls; a server running in the same process
competes for the GIL and shows up as stalls of its own. This runs
:class:`HostileFileServer` in a subprocess and drives it over a JSON-lines pipe,
with the same ``add``/``url``/``count``/``reset``/``requests`` methods.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.hostile_server import HostileFileServer

ROOT = Path(__file__).resolve().parents[2]


class SpawnedFileServer:
    """:class:`HostileFileServer`'s API, served from a child process."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> SpawnedFileServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> SpawnedFileServer:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.spawned"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.base_url = self._call("base_url")
        return self

    def stop(self) -> None:
        if self._process is not None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            self._process.wait(timeout=10)
            self._process = None

    def url(self, path: str) -> str:
        return self.base_url + path

    def add(self, path: str, body: bytes, **options: Any) -> str:
        return self._call("add", path, base64.b64encode(body).decode(), options)

    def reset(self) -> None:
        self._call("reset")

    def clear_requests(self) -> None:
        self._call("clear_requests")

    @property
    def requests(self) -> list[tuple[str, str]]:
        return [tuple(r) for r in self._call("requests")]  # type: ignore[misc]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return self._call("count", method, path)

    def _call(self, op: str, *args: Any) -> Any:
        assert self._process is not None and self._process.stdin and self._process.stdout
        self._process.stdin.write(json.dumps([op, *args]) + "\n")
        self._process.stdin.flush()
        return json.loads(self._process.stdout.readline())


def _serve() -> None:
    with HostileFileServer() as server:
        for line in sys.stdin:
            op, *args = json.loads(line)
            if op == "base_url":
                result: Any = server.base_url
            elif op == "add":
                path, body, options = args
                result = server.add(path, base64.b64decode(body), **options)
            elif op == "reset":
                result = server.reset()
            elif op == "clear_requests":
                with server._lock:
                    server.requests.clear()
                result = None
            elif op == "requests":
                result = list(server.requests)
            else:
                result = server.count(*args)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _serve()
