"""Cancellation that httpcore2 survives: once per fetch, only where it is safe, never in a close.

httpcore2 (2.17, as httpcore 1.0.9 before it) cleans up after a cancelled
request inside ``AsyncShieldCancellation`` blocks, anyio cancel scopes that
asyncio's own ``Task.cancel()`` goes straight through (encode/httpcore#1093,
pydantic/httpx2#982), and has moments where one cancellation leaves a
connection that no request owns and nothing will ever free. After
``concurrency`` of them, every fetch on the loop waits for a connection
forever. Measured on httpcore2 2.17, two kinds of moment remain:

* closing a response: the connection is released only if the close runs to
  its end. Every close here runs as a task of its own that nobody cancels
  (:func:`close`).
* the first request on a new connection, between connecting and sending (the
  connection stays NEW, before httpcore2 is inside the ``try`` that would
  release it). There a cancellation waits, a few microseconds, until
  httpcore2's ``trace`` extension says the request has reached a point that
  cleans up after itself (:meth:`CancelGate.trace`).

And httpcore2's clean-up after a first cancellation (``except BaseException``
blocks) is cut by a second: a fetch runs in a task of its own
(:meth:`CancelGate.run`) that any number of cancellations of the caller (a
user, a ``TaskGroup`` sibling failing, a deadline) reach as one.

httpcore 1.0 had a third moment, just after the pool assigned a connection
that was never connected; httpcore2 drops such a connection itself since 2.6
(pydantic/httpx2#983), so a cancellation there is delivered at once.
``tests/http/test_cancellation.py`` holds each moment open and cancels in it.

This is the one module that knows httpcore2's trace events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from ..loops import running_loop

__all__ = ["CancelGate", "close"]

T = TypeVar("T")

# httpcore2's trace events: from these on, a cancellation is cleaned up ...
_SAFE_FROM = frozenset(
    {
        "connection.connect_tcp.started",  # inside the try that marks a failed connect
        "connection.start_tls.started",
        "http11.send_request_headers.started",  # inside the try that releases the request
    }
)
# ... and from these on, until the next safe event, it would not be.
_UNSAFE_FROM = frozenset({"connection.connect_tcp.complete", "connection.start_tls.complete"})


class _Closable(Protocol):
    async def aclose(self) -> None: ...


class CancelGate:
    """Delivers a caller's cancellation to its fetch once, and only where httpcore2 survives it."""

    def __init__(self) -> None:
        self._task: asyncio.Future[Any] | None = None
        self._requested = False
        self._delivered = False
        self._unsafe = False

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` in a task of its own; the caller's cancellations reach it as one.

        When the caller is cancelled, ``work`` is cancelled (as soon as it is
        safe) and waited for, so that its clean-up, and httpcore2's, runs to
        the end; then the caller's cancellation goes on, whatever ``work``
        ended with. Otherwise its result or exception passes through.
        """
        task: asyncio.Task[T] = asyncio.ensure_future(work)
        self._task = task
        if await _wait(task, on_cancel=self._request):
            _discard(task)
            raise asyncio.CancelledError
        return task.result()

    @contextmanager
    def sending(self) -> Iterator[None]:
        """Around one transport request: safe until httpcore2's trace says it connected."""
        try:
            yield
        finally:
            self._unsafe = False
            self._deliver()

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore2's ``trace`` extension: follows where the request is."""
        if event in _SAFE_FROM or event.endswith(".failed"):
            self._unsafe = False
            self._deliver()
        elif event in _UNSAFE_FROM:
            self._unsafe = True

    def _request(self) -> None:
        self._requested = True
        self._deliver()

    def _deliver(self) -> None:
        if self._requested and not self._delivered and not self._unsafe:
            assert self._task is not None
            self._delivered = True
            self._task.cancel()


async def close(resource: _Closable) -> None:
    """Close ``resource`` to the end, even if the caller is cancelled meanwhile.

    The close is local work (no waiting on a server), so waiting for it
    delays a cancellation only briefly. With no loop running (the garbage
    collector finalising a fetch whose loop was closed) nothing can run: the
    resource is left to be collected, and its socket is closed with it.
    """
    loop = running_loop()
    if loop is None:
        return
    closing = loop.create_task(resource.aclose())
    if await _wait(closing, on_cancel=lambda: None):
        _discard(closing)
        raise asyncio.CancelledError
    closing.result()


async def _wait(task: asyncio.Future[Any], on_cancel: Callable[[], object]) -> bool:
    """Wait until ``task`` is done; call ``on_cancel`` on our first cancellation.

    Returns whether we were cancelled meanwhile.
    """
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            if not cancelled:
                cancelled = True
                on_cancel()
    return cancelled


def _discard(task: asyncio.Future[Any]) -> None:
    # The caller's cancellation wins over the outcome of work it no longer
    # wants; mark that outcome as seen so asyncio does not log it.
    if not task.cancelled():
        task.exception()
