"""Suite-wide rules: every async test runs under pyleak and the guard in strict mode.

The plugin authors' fixtures come from this package's own pytest plugin
(``llm_async_attachments.pytest_plugin``), as they would for a plugin author;
``file_server`` is the same server with the hostile routes of
``tests/support/hostile_server.py``.
"""

from __future__ import annotations

import gc
import inspect
import os
import random
from collections.abc import Iterator

import pytest
from hypothesis import settings

import llm_async_attachments as laa
from llm_async_attachments.integration import learned_reads as reads
from tests.support.hostile_server import HostileFileServer
from tests.support.openai_server import OpenAIServer
from tests.support.scenario import warm_up

# pyleak's default (200 ms) would let a blocking fetch on loopback pass unseen.
BLOCKING_THRESHOLD = 0.1
DISK_DIR = "LLM_ASYNC_ATTACHMENTS_DISK_CACHE_DIR"


pytest_plugins = ["pytester"]

# Property tests draw the same examples on every run (seeded by each test's name), so
# CI is repeatable; HYPOTHESIS_PROFILE=explore draws new ones, to hunt for bugs locally.
# No deadline: a loaded 2-core CI machine must not turn a slow example into a failure.
settings.register_profile("seeded", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "seeded"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pypi: installs from the package registry; offline, run -m 'not pypi'"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        if inspect.iscoroutinefunction(function) and not item.get_closest_marker("no_leaks"):
            item.add_marker(pytest.mark.no_leaks(blocking_threshold=BLOCKING_THRESHOLD))


@pytest.fixture(scope="session", autouse=True)
def _llm_plugins_loaded():
    """Load llm's plugins, and the openai client's lazy modules, before any loop runs.

    Importing them takes hundreds of milliseconds, once per process: that is
    llm's and openai's start-up, not attachment I/O, and would trip pyleak.
    """
    _unregister_llm_openai_plugin()
    warm_up()
    # Move everything loaded so far out of the garbage collector's sight: a full
    # collection then takes microseconds instead of ~40 ms (more on a loaded CI
    # machine), and cannot show up as an event-loop stall in whichever test it
    # happens to fall in.
    gc.collect()
    gc.freeze()


def _unregister_llm_openai_plugin() -> None:
    """Take llm-openai-plugin (a test dependency) out of llm's model registry.

    Its register_models() builds some sixty pydantic option classes, and llm runs
    every plugin's register_models() on each llm.get_async_model() call: 100-200 ms
    each, growing, measured with llm 0.36 and llm-openai-plugin 0.7. That is the
    plugin's cost, not attachment I/O, yet it would fail every test that looks a
    model up on a loop. tests/integration/test_url_support.py instantiates its classes instead.
    llm-gemini (0.35) is taken out for the same reason: 26 ms per lookup.
    """
    from llm.plugins import load_plugins, pm

    load_plugins()
    for name, plugin in pm.list_name_plugin():
        if getattr(plugin, "__name__", None) in ("llm_openai", "llm_gemini"):
            pm.set_blocked(name)


@pytest.fixture(autouse=True)
def _seeded_random(request: pytest.FixtureRequest) -> None:
    """The global ``random`` (the retry back-off's jitter) repeats per test, run after run."""
    random.seed(request.node.nodeid)


@pytest.fixture(scope="session", autouse=True)
def _disk_tier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The disk tier of every test, and of child processes, in a temporary directory."""
    directory = str(tmp_path_factory.mktemp("disk-tier"))
    previous = os.environ.get(DISK_DIR)
    os.environ[DISK_DIR] = directory
    yield directory
    if previous is None:
        del os.environ[DISK_DIR]
    else:
        os.environ[DISK_DIR] = previous


@pytest.fixture(autouse=True)
def _nothing_learned() -> Iterator[None]:
    """Each test starts with no model's reads learned: what one test's model read
    must not decide what another's prepares."""
    reads.forget()
    yield
    reads.forget()


@pytest.fixture(autouse=True)
def strict_guard(_disk_tier: str):
    """The guard raises on any blocking attachment read on an event loop."""
    laa.configure(laa.Config(guard="strict", disk_cache_dir=_disk_tier))
    yield
    laa.configure(None)


@pytest.fixture(scope="session")
def _file_server() -> Iterator[HostileFileServer]:
    with HostileFileServer() as server:
        yield server


@pytest.fixture
def file_server(_file_server: HostileFileServer) -> HostileFileServer:
    """A real HTTP server on 127.0.0.1, emptied and with a fresh request log per test."""
    _file_server.reset()
    return _file_server


@pytest.fixture(scope="session")
def _openai_server():
    server = OpenAIServer().start()
    yield server
    server.stop()


@pytest.fixture
def openai_server(_openai_server: OpenAIServer, monkeypatch, tmp_path) -> Iterator[OpenAIServer]:
    """A loopback OpenAI-compatible API that llm's own OpenAI models talk to."""
    _openai_server.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", _openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm-user"))
    yield _openai_server
    # llm's OpenAI plugin leaves an open openai client behind per prompt; their
    # __del__ schedules clean-up tasks on whatever loop runs when they are
    # collected. Collect them here, where no loop runs.
    gc.collect()
