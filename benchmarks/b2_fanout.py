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
from collections.abc import Awaitable, Callable

import httpx
import llm

import llm_async_attachments as laa
from llm_async_attachments.testing import samples
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
        # 500 attachments of 2 MiB are 1000 MiB: over the 128 MiB default per call.
        config = dataclasses.replace(
            laa.get_config(), concurrency=concurrency, max_total_bytes=2 * 1024**3
        )
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


APPROACHES = (
    "llm sync, sequential",
    "asyncio.to_thread each (#1195)",
    "llm-async-attachments",
    "raw httpx + gather (floor)",
)


def run(ns: list[int], concurrency: int) -> dict[int, dict[str, tuple[int, float, float]]]:
    """For each N and approach: (requests, largest stall in ms, wall seconds)."""
    llm.get_async_models()
    laa.configure(dataclasses.replace(laa.Config(), guard="off"))  # let llm block, as today
    body = samples.sized("png", SIZE)
    results: dict[int, dict[str, tuple[int, float, float]]] = {}
    with SpawnedFileServer() as server:
        for n in ns:
            urls = [
                server.add(f"/f{i}.png", body, content_type="image/png", latency=LATENCY)
                for i in range(n)
            ]
            works = dict(
                zip(
                    APPROACHES,
                    (
                        llm_sequential(urls),
                        to_thread_each(urls),
                        this_package(urls, concurrency),
                        raw_httpx(urls, concurrency),
                    ),
                    strict=True,
                )
            )
            results[n] = {}
            for name, work in works.items():
                server.clear_requests()
                measured = asyncio.run(measure(work))
                results[n][name] = (server.count(), measured.largest_stall_ms, measured.wall_s)
            print(report({n: results[n]}, concurrency, header=n == ns[0]), flush=True)
    laa.configure(None)
    return results


def report(
    results: dict[int, dict[str, tuple[int, float, float]]], concurrency: int, header: bool = True
) -> str:
    lines = []
    if header:
        lines += [
            f"B2 fan-out: {SIZE >> 20} MiB PNGs, {LATENCY * 1000:.0f} ms latency, "
            f"concurrency {concurrency}",
            "",
            f"{'N':>4} {'approach':32} {'requests':>9} {'stall ms':>9} {'wall s':>8} "
            f"{'vs ours':>8}",
        ]
    for n, rows in results.items():
        ours = rows["llm-async-attachments"][2]
        for name, (requests, stall, wall) in rows.items():
            lines.append(
                f"{n:>4} {name:32} {requests:>9} {stall:>9.1f} {wall:>8.2f} {wall / ours:>7.1f}x"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[int, dict[str, tuple[int, float, float]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 10, 100, 500])
    parser.add_argument("--concurrency", type=int, default=laa.Config().concurrency)
    args = parser.parse_args(argv)
    return run(args.n, args.concurrency)


if __name__ == "__main__":
    main()
