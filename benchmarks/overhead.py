"""The package's own costs: per-attachment overhead, and base64 of large content on the loop.

1. Overhead: one small URL attachment (1 KiB, no latency) prepared 300 times in
   a row, against 300 bare ``GET``s on a warm pooled ``httpx.AsyncClient``,
   the same server (in its own process): the median difference is what the
   package adds per attachment (planning, caps, redirect and type handling).
2. base64 on the loop: a 32 MiB attachment, prepared; the stall a 1 ms ticker
   sees while a plugin calls ``base64_content()``, with llm's own method (it
   encodes on the loop, every call) and with this package's (encoded once,
   on a worker thread, during prepare).

    .venv/bin/python -m benchmarks.overhead
"""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
import llm

import llm_async_attachments as laa
from llm_async_attachments.testing import samples
from tests.support.spawned import SpawnedFileServer
from tests.support.stall import measure

ROUNDS = 300
BIG = 32 * 1024 * 1024


async def overhead(urls: list[str]) -> tuple[float, float]:
    """Median seconds per attachment: this package, and a bare httpx GET."""
    echo = llm.get_async_model("echo")
    ours = []
    for url in urls:
        prompt = llm.Prompt("x", echo, attachments=[llm.Attachment(url=url)])
        started = time.perf_counter()
        await laa.prepare_attachments(prompt)
        ours.append(time.perf_counter() - started)
    bare = []
    async with httpx.AsyncClient() as client:
        await client.get(urls[0])
        for url in urls:
            started = time.perf_counter()
            (await client.get(url)).raise_for_status()
            bare.append(time.perf_counter() - started)
    return statistics.median(ours[10:]), statistics.median(bare[10:])


async def base64_stalls(url: str) -> dict[str, float]:
    """Largest stall while base64_content() runs 3 times (a 3-turn conversation)."""
    attachment = llm.Attachment(url=url)
    prompt = llm.Prompt("x", llm.get_async_model("echo"), attachments=[attachment])
    prepared = await measure(lambda: laa.prepare_attachments(prompt))
    llms_own = llm.Attachment.base64_content.__wrapped__

    async def llm_encodes() -> None:
        for _ in range(3):
            llms_own(attachment)
            await asyncio.sleep(0)

    async def cached() -> None:
        for _ in range(3):
            attachment.base64_content()
            await asyncio.sleep(0)

    return {
        "prepare (fetch, hash and encode off-loop)": prepared.largest_stall_ms,
        "llm's base64_content(), 3 calls": (await measure(llm_encodes)).largest_stall_ms,
        "this package's base64_content(), 3 calls": (await measure(cached)).largest_stall_ms,
    }


def main() -> dict:
    llm.get_async_models()
    with SpawnedFileServer() as server:
        small = samples.sized("png", 1024)
        urls = [server.add(f"/o{i}.png", small, content_type="image/png") for i in range(ROUNDS)]
        big = server.add("/big.png", samples.sized("png", BIG), content_type="image/png")
        ours, bare = asyncio.run(overhead(urls))
        stalls = asyncio.run(base64_stalls(big))
    print(f"Per attachment (median of {ROUNDS - 10}, 1 KiB, loopback):")
    print(f"  bare httpx GET            {bare * 1e6:8.0f} us")
    print(f"  prepare_attachments()     {ours * 1e6:8.0f} us")
    print(f"  the package's overhead    {(ours - bare) * 1e6:8.0f} us\n")
    print(f"base64 of a {BIG >> 20} MiB attachment, largest event-loop stall:")
    for name, stall in stalls.items():
        print(f"  {name:44} {stall:7.1f} ms")
    return {"ours_s": ours, "bare_s": bare, "stalls": stalls}


if __name__ == "__main__":
    main()
