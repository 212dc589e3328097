"""Measuring how long an event loop was stalled while some work ran."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

TICK = 0.001


@dataclass(frozen=True)
class Measured:
    """The largest gap a 1 ms ticker saw beyond its own tick, and the wall time."""

    largest_stall_ms: float
    wall_s: float


async def measure(work: Callable[[], Awaitable[object]]) -> Measured:
    """Run ``work()`` beside a 1 ms ticker on the running loop."""
    gaps = [0.0]
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            gaps.append(now - last - TICK)
            last = now

    async with asyncio.TaskGroup() as group:
        group.create_task(ticker())
        await asyncio.sleep(0.01)  # let the ticker start before the work
        started = time.perf_counter()
        try:
            await work()
        finally:
            done.set()
        wall = time.perf_counter() - started
    return Measured(max(gaps) * 1000, wall)
