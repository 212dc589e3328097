"""Suite-wide rules: every async test runs under pyleak and the guard in strict mode."""

from __future__ import annotations

import inspect

import llm
import pytest

import llm_async_attachments as laa
from tests.support.fileserver import FileServer

# pyleak's default (200 ms) would let a blocking fetch on loopback pass unseen.
BLOCKING_THRESHOLD = 0.1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        if inspect.iscoroutinefunction(function) and not item.get_closest_marker("no_leaks"):
            item.add_marker(pytest.mark.no_leaks(blocking_threshold=BLOCKING_THRESHOLD))


@pytest.fixture(scope="session", autouse=True)
def _llm_plugins_loaded():
    """Load llm's plugins before any event loop runs: importing them blocks for a while."""
    llm.get_async_models()


@pytest.fixture(autouse=True)
def strict_guard():
    """The guard raises on any blocking attachment read on an event loop."""
    laa.configure(laa.Config(guard="strict"))
    yield
    laa.configure(None)


@pytest.fixture(scope="session")
def _file_server():
    server = FileServer().start()
    yield server
    server.stop()


@pytest.fixture
def file_server(_file_server: FileServer) -> FileServer:
    """A real HTTP server on 127.0.0.1, emptied and with a fresh request log per test."""
    _file_server.reset()
    return _file_server
