"""Event loops and what they hold are freed: workers call ``asyncio.run()`` thousands of times."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import warnings
from urllib.parse import urlsplit

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.core import cpu_jobs
from llm_async_attachments.http import anyio_tasks, pool
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


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_loop_closed_with_a_fetch_in_flight_leaves_no_open_socket_once_collected(
    file_server, monkeypatch
):
    # Collecting the abandoned coroutines raises in their clean-up, which Python reports
    # as unraisable: kept here as names, not as tracebacks that would keep their frames.
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda hook: unraisable.append(str(hook.exc_value)))
    # A body that drips a byte every 50 ms: the fetch reads inside anyio's fail_after.
    url = file_server.url("/drip?size=1000&interval=0.05")
    port = urlsplit(url).port
    loops_before = alive(asyncio.AbstractEventLoop)
    loop = asyncio.new_event_loop()
    task = loop.create_task(prepare(url))
    while client_sockets(port) == 0:  # bounded by the test's own timeout
        loop.run_until_complete(asyncio.sleep(0.01))
    loop.run_until_complete(asyncio.sleep(0.1))  # bytes arriving
    assert not task.done()

    loop.close()  # its tasks are left pending for good (Python says so as they go)
    del task, loop
    gc.collect()

    # anyio's record of the task's cancel scope no longer keeps it (and its socket),
    # and closing the response made no loop of its own to run on.
    assert client_sockets(port) == 0
    assert alive(asyncio.AbstractEventLoop) == loops_before


def test_anyio_keeps_its_record_of_tasks_where_the_package_expects_it():
    # If anyio moves it, the fetches of a loop closed mid-flight are kept again: say so.
    assert anyio_tasks.task_states() is not None
