"""Cancellation that httpcore survives: at most once per fetch, never during a close.

httpcore 1.0.9 cleans up after a cancelled request inside
``AsyncShieldCancellation`` blocks, which are anyio cancel scopes; asyncio's
own ``Task.cancel()`` goes straight through them (encode/httpcore#1093,
encode/httpx#3782). So a cancellation that lands while httpcore releases a
connection leaves that connection ACTIVE with its request still queued, and
after ``concurrency`` such events every later fetch on the loop waits for a
connection forever. Two kinds of moment are exposed:

* closing a response: httpcore marks the connection idle and removes the
  request from its queue only if the close runs to the end. Every close
  here runs as a task of its own that nobody cancels (:func:`close`).
* httpcore's own clean-up after a first cancellation (in ``except
  BaseException`` blocks): a second cancellation would cut it. A fetch runs
  in a task of its own (:func:`cancel_once`) to which any number of
  cancellations of the caller (a user, a ``TaskGroup`` sibling failing, a
  deadline) arrive as exactly one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

__all__ = ["cancel_once", "close"]

T = TypeVar("T")


class _Closable(Protocol):
    async def aclose(self) -> None: ...


async def cancel_once(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` in a task of its own, cancelled at most once however often we are.

    When the caller is cancelled, ``work`` is cancelled once and waited for,
    so that its clean-up (and httpcore's) runs to the end; then the caller's
    cancellation goes on, whatever ``work`` ended with. Otherwise its result
    or exception passes through.
    """
    task = asyncio.ensure_future(work)
    if await _wait(task, on_cancel=task.cancel):
        _discard(task)
        raise asyncio.CancelledError
    return task.result()


async def close(resource: _Closable) -> None:
    """Close ``resource`` to the end, even if the caller is cancelled meanwhile.

    The close is local work (no waiting on a server), so waiting for it
    delays a cancellation only briefly.
    """
    closing = asyncio.ensure_future(resource.aclose())
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
