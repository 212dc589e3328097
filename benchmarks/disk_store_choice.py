"""Why the disk tier is sqlite3 on worker threads, not hishel's AsyncSqliteStorage.

Both keep 1,000 bodies of 64 KiB and 20 of 4 MiB in a fresh SQLite database in WAL
mode, 64 at a time on one event loop, then read each back whole; the largest stall a
1 ms ticker sees on the loop is measured too. The two run interleaved, three rounds,
best of three reported. hishel's storage needs ``anysqlite``, which is not a
dependency of this package:

    pip install anysqlite && python -m benchmarks.disk_store_choice
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from hishel import AsyncSqliteStorage, Headers, Request, Response

from llm_async_attachments.store.disk_tier import DiskTier

Work = Callable[[int, bytes], Awaitable[None]]


async def _stall(during: Awaitable[None]) -> tuple[float, float]:
    """Wall seconds of ``during`` and the largest gap a 1 ms ticker saw meanwhile."""
    loop, worst, stop = asyncio.get_running_loop(), 0.0, False

    async def tick() -> None:
        nonlocal worst
        last = loop.time()
        while not stop:
            await asyncio.sleep(0.001)
            now = loop.time()
            worst, last = max(worst, now - last - 0.001), now

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    await during
    wall = time.perf_counter() - started
    stop = True
    await ticker
    return wall, worst


async def _all(work: Work, count: int, body: bytes) -> None:
    slots = asyncio.Semaphore(64)

    async def one(index: int) -> None:
        async with slots:
            await work(index, body)

    await asyncio.gather(*(one(index) for index in range(count)))


async def _body(chunks: bytes) -> AsyncIterator[bytes]:
    yield chunks


async def _ours(directory: Path, count: int, body: bytes) -> list[tuple[float, float]]:
    tier = DiskTier(directory, 1 << 34)

    async def put(index: int, body: bytes) -> None:
        await tier.put(f"k{index}", body, b"meta", 3600)

    async def get(index: int, body: bytes) -> None:
        record = await tier.get(f"k{index}")
        assert record is not None and len(record.body) == len(body)

    try:
        return [await _stall(_all(put, count, body)), await _stall(_all(get, count, body))]
    finally:
        tier.close()


async def _hishel(directory: Path, count: int, body: bytes) -> list[tuple[float, float]]:
    storage = AsyncSqliteStorage(database_path=directory / "hishel.db", max_size=1 << 34)
    request = Request("GET", "https://example.com/x", Headers({}))

    async def put(index: int, body: bytes) -> None:
        response = Response(200, Headers({"content-type": "image/png"}), _body(body))
        entry = await storage.create_entry(request, response, f"k{index}")
        assert entry.response.stream is not None
        async for _chunk in entry.response.stream:  # type: ignore[union-attr]
            pass  # the body is stored as it is read

    async def get(index: int, body: bytes) -> None:
        (entry,) = await storage.get_entries(f"k{index}")
        read = b"".join([chunk async for chunk in entry.response.stream])  # type: ignore[union-attr]
        assert len(read) == len(body)

    try:
        return [await _stall(_all(put, count, body)), await _stall(_all(get, count, body))]
    finally:
        await storage.close()


async def main() -> None:
    cases = [(1000, 64 * 1024), (20, 4 * 1024 * 1024)]
    best: dict[tuple[str, int, str], tuple[float, float]] = {}
    for _round in range(3):
        for count, size in cases:
            body = uuid.uuid4().bytes * (size // 16)
            for name, run in (
                ("sqlite3 on threads (ours)", _ours),
                ("hishel AsyncSqliteStorage", _hishel),
            ):
                with tempfile.TemporaryDirectory() as directory:
                    results = await run(Path(directory), count, body)
                for step, result in zip(("write", "read"), results, strict=True):
                    key = (name, count, step)
                    best[key] = min(best.get(key, result), result)
    print("| store | bodies | step | wall | largest stall |")
    print("|---|---|---|---|---|")
    for (name, count, step), (wall, stall) in best.items():
        size = "64 KiB" if count == 1000 else "4 MiB"
        wall_ms, stall_ms = f"{wall * 1000:,.0f} ms", f"{stall * 1000:.1f} ms"
        print(f"| {name} | {count} x {size} | {step} | {wall_ms} | {stall_ms} |")


if __name__ == "__main__":
    asyncio.run(main())
