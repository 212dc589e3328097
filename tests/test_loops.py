"""Event loops and what they hold are freed: workers call ``asyncio.run()`` thousands of times."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import warnings
from urllib.parse import urlsplit

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.core import cpu_jobs
from llm_async_attachments.http import pool
from llm_async_attachments.http.transport import PoolTransport
from llm_async_attachments.testing import samples
from tests.support import eventually

MiB = 1024 * 1024


def alive(kind: type) -> int:
    gc.collect()
    return sum(1 for thing in gc.get_objects() if isinstance(thing, kind))


async def prepare(url: str) -> bytes:
    attachment = llm.Attachment(url=url)
    prompt = llm.Prompt("x", llm.get_async_model("echo"), attachments=[attachment])
    await laa.prepare_attachments(prompt)
    return attachment.content_bytes()


@pytest.fixture
def strict_guard():
    """These tests run their own loops; the guard stays as configured (not strict)."""
    yield


def test_a_thousand_asyncio_runs_leave_no_loop_or_transport_alive(file_server):
    small = file_server.add("/small.png", samples.png(), content_type="image/png")
    # Over cpu_jobs's on-loop limit: hashed and encoded under a per-loop lock.
    large = file_server.add("/large.bin", bytes(3 * MiB), content_type="image/png")
    loops_before = alive(asyncio.AbstractEventLoop)
    transports_before = alive(PoolTransport)
    for run in range(1000):
        url = large if run % 50 == 0 else small
        assert len(asyncio.run(prepare(url))) in (len(samples.png()), 3 * MiB)
    assert alive(asyncio.AbstractEventLoop) == loops_before
    assert alive(PoolTransport) == transports_before
    assert pool.loops_with_pools() == 0
    assert cpu_jobs._turns.loops() == 0
    assert eventually(lambda: file_server.open_connections() == 0)


def test_a_loop_closed_without_shutting_down_keeps_nothing_once_another_loop_fetches(
    file_server,
):
    url = file_server.add("/once.png", samples.png(), content_type="image/png")
    loops_before = alive(asyncio.AbstractEventLoop)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(prepare(url))
    loop.close()  # no shutdown_asyncgens(): its pool is never closed on it
    del loop
    assert file_server.open_connections() == 1  # the kept-alive connection
    with warnings.catch_warnings():
        # The abandoned connection is closed by the garbage collector, which warns.
        warnings.simplefilter("ignore", ResourceWarning)
        asyncio.run(prepare(url))
        assert alive(asyncio.AbstractEventLoop) == loops_before
    assert pool.loops_with_pools() == 0
    assert eventually(lambda: file_server.open_connections() == 0)


def client_sockets(port: int) -> int:
    """TCP sockets this process holds open to ``port`` (read from /proc)."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            fds.add(os.readlink(f"/proc/self/fd/{fd}"))
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                remote, inode = fields[2], fields[9]
                if int(remote.rsplit(":", 1)[1], 16) == port and f"socket:[{inode}]" in fds:
                    count += 1
    return count


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_loop_closed_without_shutting_down_leaves_no_open_socket_once_collected(file_server):
    url = file_server.add("/kept-alive.png", samples.png(), content_type="image/png")
    port = urlsplit(url).port
    loop = asyncio.new_event_loop()
    loop.run_until_complete(prepare(url))
    assert client_sockets(port) == 1  # kept alive in the loop's pool for the next fetch

    loop.close()  # no shutdown_asyncgens(): the pool's closer never runs
    del loop
    gc.collect()

    assert client_sockets(port) == 0
