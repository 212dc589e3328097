"""B2 fan-out: prepare N URL attachments (2 MiB, 50 ms latency), side by side.

Each approach runs in the same process against the same loopback server and
is measured the same way: HTTP requests the server saw, the largest stall a
1 ms ticker saw on the event loop, and wall time. Ratios are against this
package.

    python -m benchmarks.b2_fanout --n 50
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Awaitable, Callable

import httpx
import llm

import llm_async_attachments as laa
from tests.support import samples
from tests.support.spawned import SpawnedFileServer
from tests.support.stall import measure

SIZE = 2 * 1024 * 1024
LATENCY = 0.05


def llm_sequential(urls: list[str]) -> Callable[[], Awaitable[None]]:
    """What a plugin's execute() does today: llm's sync reads, on the loop."""

    async def run() -> None:
        for url in urls:
            attachment = llm.Attachment(url=url)
            attachment.resolve_type()
            attachment.content_bytes()

    return run


def to_thread_each(urls: list[str]) -> Callable[[], Awaitable[None]]:
    """llm PR #1195 style: the same sync reads, each in asyncio.to_thread."""

    def read(url: str) -> None:
        attachment = llm.Attachment(url=url)
        attachment.resolve_type()
        attachment.content_bytes()

    async def run() -> None:
        await asyncio.gather(*(asyncio.to_thread(read, url) for url in urls))

    return run


def this_package(urls: list[str], concurrency: int) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        model = llm.get_async_model("echo")
        prompt = llm.Prompt("x", model, attachments=[llm.Attachment(url=u) for u in urls])
        config = dataclasses.replace(laa.get_config(), concurrency=concurrency)
        await laa.prepare_attachments(prompt, config=config)

    return run


def raw_httpx(urls: list[str], concurrency: int) -> Callable[[], Awaitable[None]]:
    """The floor: one pooled httpx.AsyncClient and gather, no caps, no checks."""

    async def run() -> None:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(limits=limits) as client:
            responses = await asyncio.gather(*(client.get(url) for url in urls))
        for response in responses:
            response.raise_for_status()

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[50])
    parser.add_argument("--concurrency", type=int, default=laa.Config().concurrency)
    args = parser.parse_args(argv)
    llm.get_async_models()
    laa.configure(dataclasses.replace(laa.Config(), guard="off"))  # let llm block, as today
    body = samples.sized("png", SIZE)
    print(
        f"B2 fan-out: {SIZE >> 20} MiB PNGs, {LATENCY * 1000:.0f} ms latency, "
        f"concurrency {args.concurrency}\n"
    )
    print(f"{'N':>4} {'approach':32} {'requests':>9} {'stall ms':>9} {'wall s':>8} {'vs ours':>8}")
    with SpawnedFileServer() as server:
        for n in args.n:
            urls = [
                server.add(f"/f{i}.png", body, content_type="image/png", latency=LATENCY)
                for i in range(n)
            ]
            approaches = {
                "llm sync, sequential": llm_sequential(urls),
                "asyncio.to_thread each (#1195)": to_thread_each(urls),
                "llm-async-attachments": this_package(urls, args.concurrency),
                "raw httpx + gather (floor)": raw_httpx(urls, args.concurrency),
            }
            results = {}
            for name, work in approaches.items():
                server.clear_requests()
                measured = asyncio.run(measure(work))
                results[name] = (server.count(), measured)
            ours = results["llm-async-attachments"][1].wall_s
            for name, (requests, measured) in results.items():
                print(
                    f"{n:>4} {name:32} {requests:>9} {measured.largest_stall_ms:>9.1f} "
                    f"{measured.wall_s:>8.2f} {measured.wall_s / ours:>7.1f}x"
                )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
