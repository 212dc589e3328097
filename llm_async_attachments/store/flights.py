"""One piece of work at a time per slot: later callers wait for it and share its failure.

Two prepares of one attachment, or two fetches of one URL, with equal settings
on one event loop would do the same work; the second waits for the first (its
"flight") instead. An ``AttachmentError`` is shared with the waiters, each
raising its own copy (``AttachmentError.copy()``: no notes the owner added); a
total-size refusal (the owner's own budget), any other exception (a bug) and
a cancellation are the owner's alone: a waiter then does the work itself.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

from ..errors import AttachmentError, AttachmentsTotalTooLarge

__all__ = ["Flights", "fly", "wait"]

T = TypeVar("T")
Flights = weakref.WeakValueDictionary[Hashable, "asyncio.Future[AttachmentError | None]"]
"""The flights under way, by slot. Held weakly: a flight whose owner is gone without
finishing (its event loop closed with it in flight) leaves no entry that would keep
that loop, and what the flight held, alive."""


async def wait(flights: Flights, slot: Hashable) -> bool:
    """Wait for the flight in ``slot`` to end, if one is running; whether one was.

    Raises a copy of the flight's ``AttachmentError`` if it failed with one.
    """
    flight = flights.get(slot)
    if flight is None:
        return False
    failure = await asyncio.shield(flight)
    if failure is not None:
        raise failure.copy()
    return True


async def fly(flights: Flights, slot: Hashable, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work()`` as the flight in ``slot`` (which must be free: see :func:`wait`)."""
    future: asyncio.Future[AttachmentError | None] = asyncio.get_running_loop().create_future()
    flights[slot] = future
    failure = None
    try:
        return await work()
    except AttachmentsTotalTooLarge:
        raise  # the owner's budget, not the work's
    except AttachmentError as error:
        failure = error
        raise
    finally:
        if flights.get(slot) is future:
            del flights[slot]
        future.set_result(failure)
