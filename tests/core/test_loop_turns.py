"""At most PER_TURN attachments start their work in one turn of the event loop."""

from __future__ import annotations

import asyncio
from collections import Counter

from llm_async_attachments.core.loop_turns import PER_TURN, your_turn


async def test_thousands_of_starts_are_spread_over_turns_in_order():
    loop = asyncio.get_running_loop()
    turn = 0
    running = True

    def tick():
        nonlocal turn
        turn += 1
        if running:
            loop.call_soon(tick)

    loop.call_soon(tick)
    started: list[tuple[int, int]] = []

    async def start(index):
        await your_turn()
        started.append((index, turn))

    await asyncio.gather(*(start(i) for i in range(1000)))
    running = False
    assert [index for index, _ in started] == list(range(1000))  # first come, first started
    per_turn = Counter(at for _, at in started)
    assert max(per_turn.values()) <= PER_TURN
    assert len(per_turn) >= 1000 // PER_TURN


async def test_a_cancelled_waiter_gives_up_its_place():
    tasks = [asyncio.ensure_future(your_turn()) for _ in range(PER_TURN + 2)]
    await asyncio.sleep(0)  # every task has run once: PER_TURN started, two wait
    assert sum(task.done() for task in tasks) == PER_TURN
    waiting_first, waiting_second = tasks[-2:]
    waiting_first.cancel()
    await waiting_second
    assert waiting_first.cancelled()
    await asyncio.gather(*tasks[:-2])
