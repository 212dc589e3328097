"""State that lives exactly as long as one event loop.

A connection pool, or a lock, belongs to the loop it was made on and must
never be used from another. Kept in a plain mapping from loop to state, it
would keep every loop alive for good (a weak mapping does not help: the
state refers to its loop, so the loop never becomes unreachable). Here each
loop's entry is dropped when the loop shuts down (``asyncio.run()`` and
``asyncio.Runner`` call ``shutdown_asyncgens()`` before closing it), after
its closer has run on that loop; and an entry whose loop was closed without
that is dropped the next time any loop starts using this state, or the
garbage collector runs, whichever comes first, so its idle connections are
released with the rest of what it held; ``abandoned`` is called then, for
what outlives a closed loop elsewhere (the pools free the fetches that were
in flight: see ``http.anyio_tasks``).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["PerLoop", "running_loop"]

T = TypeVar("T")


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The loop running in this thread; ``None`` in a coroutine that the garbage collector
    closes after its loop was closed. Nothing can be awaited there, and
    ``asyncio.shield()`` or ``ensure_future()`` of a coroutine would make a new loop
    (with a ``DeprecationWarning``) to schedule it on, which would then keep it."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class PerLoop(Generic[T]):
    """One value per event loop, made on first use and dropped with its loop."""

    def __init__(
        self,
        make: Callable[[], Awaitable[T]],
        close: Callable[[T], Awaitable[None]] | None = None,
        abandoned: Callable[[], None] | None = None,
    ) -> None:
        self._make = make
        self._close = close
        self._abandoned = abandoned
        self._values: dict[asyncio.AbstractEventLoop, T] = {}
        self._closers: dict[asyncio.AbstractEventLoop, AsyncIterator[None]] = {}
        self._making: dict[asyncio.AbstractEventLoop, asyncio.Future[T]] = {}

    async def get(self) -> T:
        """The running loop's value; concurrent first users wait for one ``make()``."""
        loop = asyncio.get_running_loop()
        while (value := self._values.get(loop)) is None:
            making = self._making.get(loop)
            if making is None:
                return await self._make_for(loop)
            await asyncio.wait([making])  # if the maker fails, try again ourselves
        return value

    async def _make_for(self, loop: asyncio.AbstractEventLoop) -> T:
        self._forget_closed_loops()
        if self not in _every:
            _every.add(self)
            if _forget_closed not in gc.callbacks:
                gc.callbacks.append(_forget_closed)
        making = self._making[loop] = loop.create_future()
        try:
            value = await self._make()
            closer = self._closer(loop, value)
            await anext(closer)  # now registered with the loop's shutdown_asyncgens()
            self._values[loop], self._closers[loop] = value, closer
            return value
        finally:
            del self._making[loop]
            making.set_result(None)

    def loops(self) -> int:
        """How many loops hold a value now (for tests and diagnostics)."""
        return len(self._values)

    def running_value(self) -> T | None:
        """The running loop's value if it has one, without making it."""
        return self._values.get(asyncio.get_running_loop())

    def _forget_closed_loops(self) -> None:
        # A copy first (one step in C): the garbage collector's callback runs this
        # on whichever thread collects, while another may be adding a loop.
        closed = [loop for loop in self._values.copy() if loop.is_closed()]
        for loop in closed:
            self._values.pop(loop, None)
            self._closers.pop(loop, None)
        if closed and self._abandoned is not None:
            self._abandoned()

    async def _closer(self, loop: asyncio.AbstractEventLoop, value: T) -> AsyncIterator[None]:
        # A suspended async generator: the loop's shutdown_asyncgens() resumes
        # it, so the value is closed on the loop that made it, then forgotten.
        try:
            yield
        finally:
            self._values.pop(loop, None)
            self._closers.pop(loop, None)
            if self._close is not None:
                await self._close(value)


_every: weakref.WeakSet[PerLoop[Any]] = weakref.WeakSet()


def _forget_closed(phase: str, info: dict[str, int]) -> None:
    """Garbage collector callback: before a collection, drop what closed loops held."""
    if phase == "start":
        for state in list(_every):
            if state._values:
                state._forget_closed_loops()
