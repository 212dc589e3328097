"""How many attachments start their work in one turn of the event loop.

Each attachment runs tens of microseconds of Python (its state, its shared
fetch, its pool, its slot) before its first real wait. Thousands prepared at
once (an enrichment over a table, a server with many users) would all run
that in the same turn of the loop: 5,000 of them hold it for a quarter of a
second, and every other request on the loop waits. Here at most
:data:`PER_TURN` start in one turn; the others wait their turn, in order,
which costs them a few microseconds and the loop nothing.
"""

from __future__ import annotations

import asyncio
from collections import deque

from ..loops import PerLoop

__all__ = ["PER_TURN", "your_turn"]

PER_TURN = 64
"""Starts per turn of the loop: about 5 ms of work at most."""


class _Turns:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._started = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._next_scheduled = False

    def try_start(self) -> bool:
        if self._waiting or self._started >= PER_TURN:
            return False
        self._started += 1
        self._schedule_next()
        return True

    def wait(self) -> asyncio.Future[None]:
        future = self._loop.create_future()
        self._waiting.append(future)
        self._schedule_next()
        return future

    def _schedule_next(self) -> None:
        if not self._next_scheduled:
            self._next_scheduled = True
            self._loop.call_soon(self._next_turn)  # runs in the loop's next turn

    def _next_turn(self) -> None:
        self._next_scheduled = False
        self._started = 0
        while self._waiting and self._started < PER_TURN:
            future = self._waiting.popleft()
            if not future.done():  # a cancelled waiter gives up its place
                future.set_result(None)
                self._started += 1
        if self._started:
            self._schedule_next()


async def _new_turns() -> _Turns:
    return _Turns(asyncio.get_running_loop())


_turns: PerLoop[_Turns] = PerLoop(_new_turns)


async def your_turn() -> None:
    """Return at once if this turn of the loop has room for one more start, else wait."""
    turns = await _turns.get()
    if not turns.try_start():
        await turns.wait()
