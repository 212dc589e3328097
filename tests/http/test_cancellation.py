"""Cancellation never jams the connection pool: deterministic windows and seeded storms.

httpcore2 (2.17, as httpcore 1.0.9 before it) releases a connection only if its clean-up
runs to the end,
and asyncio's ``Task.cancel()`` cuts through its shields. The deterministic
tests hold that clean-up open (a slower ``_response_closed``, httpcore2's own
method, patched in the dependency, not in our code) and cancel inside it.
The storms replay from their seed: ``STORM_SEED=<n> pytest -k storm``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import random

import httpcore2._async.connection_pool as connection_pool
import httpcore2._async.http11 as http11
import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.http import pool
from llm_async_attachments.testing import samples

STORM_SEED = int(os.environ.get("STORM_SEED", "1143"))


def prompt_with(urls, model):
    return llm.Prompt("x", model, attachments=[llm.Attachment(url=u) for u in urls])


def config(**changes):
    return dataclasses.replace(laa.get_config(), **changes)


@pytest.fixture
def echo():
    return llm.get_async_model("echo")


@pytest.fixture
def slow_release(monkeypatch):
    """httpcore2 takes 200 ms to release its first connection; an event says it started."""
    started = asyncio.Event()
    original = http11.AsyncHTTP11Connection._response_closed

    async def _response_closed(self):
        if not started.is_set():
            started.set()
            await asyncio.sleep(0.2)
        await original(self)

    monkeypatch.setattr(http11.AsyncHTTP11Connection, "_response_closed", _response_closed)
    return started


def assert_pool_healthy():
    for each in pool.running_pools():
        statistics = each.statistics()
        assert statistics.orphaned == 0, statistics
        assert statistics.active == 0, statistics
        assert statistics.requests == 0, statistics


async def test_a_cancel_while_the_connection_is_released_leaves_the_pool_usable(
    file_server, echo, slow_release
):
    one_at_a_time = config(concurrency=1, timeout=2.0)
    first = file_server.add("/first.png", samples.png(), content_type="image/png")
    task = asyncio.create_task(
        laa.prepare_attachments(prompt_with([first], echo), config=one_at_a_time)
    )
    await slow_release.wait()  # the body is read; httpcore2 is releasing the connection
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # With the release cut short, the only connection would stay busy for good,
    # and this would fail with a pool timeout after 2 s.
    second = file_server.add("/second.png", samples.png(), content_type="image/png")
    summary = await laa.prepare_attachments(prompt_with([second], echo), config=one_at_a_time)
    assert summary.requests == 1
    assert_pool_healthy()


async def test_a_failing_sibling_cancelling_a_fetch_mid_release_leaves_the_pool_usable(
    file_server, echo, slow_release
):
    two = config(concurrency=2, timeout=1.0, retries=0)
    good = file_server.add("/good.png", samples.png(), content_type="image/png")
    # Fails 50 ms in: while the good fetch's connection is being released.
    bad = file_server.url("/status/404?latency=0.05")
    with pytest.raises(laa.AttachmentHTTPStatusError):
        await laa.prepare_attachments(prompt_with([good, bad], echo), config=two)
    assert slow_release.is_set()
    # Both connections must be free again: two fetches of 1.2 s that must run at
    # once, since a second one queued for 1.2 s would fail with a pool timeout.
    drips = [file_server.url(f"/drip?size=7&interval=0.2&n={i}") for i in range(2)]
    summary = await laa.prepare_attachments(prompt_with(drips, echo), config=two)
    assert summary.requests == 2
    assert_pool_healthy()


async def test_repeated_cancels_reach_the_fetch_once_and_it_still_cleans_up(
    file_server, echo, slow_release
):
    url = file_server.add("/twice.png", samples.png(), content_type="image/png")
    one_at_a_time = config(concurrency=1, timeout=2.0)
    task = asyncio.create_task(
        laa.prepare_attachments(prompt_with([url], echo), config=one_at_a_time)
    )
    await slow_release.wait()
    for _ in range(5):
        task.cancel()
        await asyncio.sleep(0.01)
    with pytest.raises(asyncio.CancelledError):
        await task
    again = file_server.add("/again.png", samples.png(), content_type="image/png")
    await laa.prepare_attachments(prompt_with([again], echo), config=one_at_a_time)
    assert_pool_healthy()


@pytest.fixture
def slow_wake(monkeypatch):
    """The pool has assigned a fresh connection; the request takes 200 ms to wake up."""
    started = asyncio.Event()
    original = connection_pool.AsyncPoolRequest.wait_for_connection

    async def wait_for_connection(self, timeout=None):  # noqa: ASYNC109 (httpcore2's)
        connection = await original(self, timeout)
        if not started.is_set():
            started.set()
            await asyncio.sleep(0.2)
        return connection

    monkeypatch.setattr(
        connection_pool.AsyncPoolRequest, "wait_for_connection", wait_for_connection
    )
    return started


@pytest.fixture
def slow_first_request(monkeypatch):
    """A new connection is open; its first request takes 200 ms to start."""
    started = asyncio.Event()
    original = http11.AsyncHTTP11Connection.handle_async_request

    async def handle_async_request(self, request):
        if not started.is_set():
            started.set()
            await asyncio.sleep(0.2)
        return await original(self, request)

    monkeypatch.setattr(http11.AsyncHTTP11Connection, "handle_async_request", handle_async_request)
    return started


@pytest.mark.parametrize("window", ["slow_wake", "slow_first_request"])
async def test_a_cancel_before_a_new_connection_is_used_leaves_the_pool_usable(
    file_server, echo, window, request
):
    started = request.getfixturevalue(window)
    one_at_a_time = config(concurrency=1, timeout=2.0)
    url = file_server.add("/new.png", samples.png(), content_type="image/png")
    task = asyncio.create_task(
        laa.prepare_attachments(prompt_with([url], echo), config=one_at_a_time)
    )
    await started.wait()  # httpcore2 holds a connection no try block would release yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The only connection, left NEW or never connected, would stay for good, and
    # this would fail with a pool timeout after 2 s.
    again = file_server.add("/after-new.png", samples.png(), content_type="image/png")
    summary = await laa.prepare_attachments(prompt_with([again], echo), config=one_at_a_time)
    assert summary.requests == 1
    assert_pool_healthy()


# The storms are about leaks under load: hundreds of tasks, and the in-process
# server's threads competing for the GIL. Blocking is asserted everywhere else.
@pytest.mark.no_leaks(blocking_threshold=0.5)
async def test_storm_of_5000_cancellations_and_sibling_failures_leaves_a_healthy_pool(
    file_server, echo
):
    rng = random.Random(STORM_SEED)
    urls = [
        file_server.add(
            f"/storm{i}.png",
            samples.sized("png", rng.choice([1024, 64 * 1024, 256 * 1024])),
            content_type="image/png",
            latency=rng.choice([0, 0, 0.001, 0.003]),
        )
        for i in range(40)
    ]
    failing = [
        file_server.url(f"/status/{code}?latency={latency}")
        for code in (404, 500)
        for latency in (0, 0.002)
    ]
    storm = config(concurrency=4, timeout=5.0, retries=0)
    cancelled = failed = finished = rounds = 0
    gc.collect()
    gc.freeze()  # a full collection of the suite's objects would stall the loop mid-storm
    while cancelled + failed < 5000:
        rounds += 1
        tasks = []
        for _ in range(25):
            chosen = rng.sample(urls, rng.randint(1, 3))
            if rng.random() < 0.2:
                chosen.insert(rng.randrange(len(chosen) + 1), rng.choice(failing))
            prompt = prompt_with(chosen, echo)
            tasks.append(asyncio.create_task(laa.prepare_attachments(prompt, config=storm)))
        await asyncio.sleep(rng.uniform(0, 0.004))
        for task in tasks:
            for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
                task.cancel()
                if rng.random() < 0.5:
                    await asyncio.sleep(0)
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, asyncio.CancelledError):
                cancelled += 1
            elif isinstance(outcome, laa.AttachmentHTTPStatusError):
                failed += 1  # and its siblings in that prepare were cancelled
            else:
                assert isinstance(outcome, laa.PrepareSummary), (STORM_SEED, outcome)
                finished += 1
    assert cancelled > 3000, (STORM_SEED, rounds, cancelled, failed, finished)
    # A fresh fetch gets a connection at once (timeout 5 s would fail it otherwise),
    # and no connection is busy without a live request.
    fresh = file_server.add("/fresh.png", samples.png(), content_type="image/png")
    summary = await laa.prepare_attachments(prompt_with([fresh], echo), config=storm)
    assert summary.requests == 1
    assert_pool_healthy()
