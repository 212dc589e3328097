"""CPU work kept off the event loop: one job at a time per loop, on a worker thread.

Hashing and base64-encoding large content would stall the loop for tens of
milliseconds. On a worker thread they stop blocking it, but a thread holding
the GIL still delays it: several at once can keep the loop waiting for the
GIL over many switch intervals. One job at a time keeps each wait to about
one interval (5 ms).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def off_loop(work: Callable[[], T]) -> T:
    """``work()`` on a worker thread, after any other job of this loop finishes."""
    loop = asyncio.get_running_loop()
    turn = _turns.get(loop)
    if turn is None:
        turn = _turns[loop] = asyncio.Lock()
    async with turn:
        return await asyncio.to_thread(work)
