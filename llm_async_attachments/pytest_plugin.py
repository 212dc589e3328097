"""pytest fixtures for llm plugin authors, loaded automatically (``pytest11`` entry point).

* ``attachment_server``: a real HTTP server on 127.0.0.1 serving sample files
  with knobs (latency, ``HEAD`` refused, no ``Content-Type``, oversize, slow).
* ``strict_guard``: the guard raises on any blocking attachment read on an
  event loop, for the test.
* ``check_async_model``: ``await check_async_model(model)`` prompts ``model``
  with a URL, a path and a bytes attachment of a type it accepts and fails if
  the event loop blocks, a task or thread leaks, or an attachment read blocks.

pytest imports this module in every run wherever the package is installed, so
it imports nothing but pytest and the standard library (the package's
``__init__`` is lazy): llm, httpx2 and pyleak load inside the fixtures, and a
missing kit dependency fails the test that uses the fixture, with the extra to
install (``pip install 'llm-async-attachments[testing]'``), never the run.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .testing.server import FileServer


class AttachmentServer:
    """A loopback :class:`~llm_async_attachments.testing.FileServer` with knobs."""

    def __init__(self, server: FileServer) -> None:
        self.server = server
        self._served = itertools.count(1)

    def url(
        self,
        kind: str = "png",
        *,
        latency: float = 0.0,
        head_refused: bool = False,
        content_type: str | None = "",
        size: int | None = None,
    ) -> str:
        """The URL of a sample file (``png``, ``jpeg``, ``gif``, ``webp``, ``pdf``,
        ``wav``, ``mp3``): ``content_type=None`` sends none, ``""`` the right one;
        ``size`` pads the file, keeping its type."""
        from .testing import samples

        data = samples.sized(kind, size) if size else samples.SAMPLES[kind]
        if content_type == "":
            expected = samples.EXPECTED_MIME[kind]
            content_type = "audio/wav" if expected == "audio/wave" else expected
        return self.server.add(
            f"/{next(self._served)}.{kind}",
            data,
            content_type=content_type,
            latency=latency,
            head_status=405 if head_refused else None,
        )

    def oversize_url(self, size: int) -> str:
        """A URL declaring (and sending) ``size`` bytes."""
        return self.server.url(f"/big?size={size}")

    def slow_url(self, size: int = 100, interval: float = 1.0) -> str:
        """A URL that sends ``size`` bytes, one every ``interval`` seconds."""
        return self.server.url(f"/drip?size={size}&interval={interval}")

    @property
    def requests(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request so far, in order."""
        return self.server.requests


@pytest.fixture(scope="session")
def _attachment_file_server() -> Iterator[FileServer]:
    from .testing.server import FileServer

    with FileServer() as server:
        yield server


@pytest.fixture
def attachment_server(_attachment_file_server: FileServer) -> AttachmentServer:
    """A loopback attachment server, emptied for each test."""
    _attachment_file_server.reset()
    return AttachmentServer(_attachment_file_server)


@pytest.fixture
def strict_guard() -> Iterator[None]:
    """The guard in strict mode: any blocking attachment read on a loop raises.

    Each test also starts with no model's reads learned (see the user guide's
    "Memory and the cache"), so that what one test's model read does not
    decide what another test prepares.
    """
    import dataclasses

    from . import configure, get_config, install
    from .integration import learned_reads

    install()
    before = get_config()
    configure(dataclasses.replace(before, guard="strict"))
    learned_reads.forget()
    yield
    learned_reads.forget()
    configure(before)


@pytest.fixture
def check_async_model(
    attachment_server: AttachmentServer, tmp_path: Path
) -> Callable[..., Awaitable[str]]:
    """``await check_async_model(model, **options)``: prompt with URL, path and bytes
    attachments under pyleak and the strict guard; returns the response text."""
    from .testing.check import check_never_blocks, sample_attachments

    async def check(model: Any, **options: Any) -> str:
        attachments = sample_attachments(model, attachment_server.server, tmp_path)
        return await check_never_blocks(model, attachments, **options)

    return check
