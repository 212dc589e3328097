"""B2 fan-out: prepare N URL attachments (64 KiB, 50 ms latency), side by side.

Every approach runs in the same process, against the same loopback server (in
a process of its own), measured the same way: HTTP requests the server saw,
the largest stall a 1 ms ticker saw on the event loop, and wall time. The
package runs with its default settings. The floors are real floors: raw
httpx with shared clients created and warmed (connections open) before the
timed region,

* at the package's concurrency for one host (``Config.host_concurrency``,
  in transports of at most 16 connections, as the package's pool), and
* at the best of several concurrencies (16 in one client; 32 and 64 in
  clients of 16), each also with bare ``httpx.AsyncHTTPTransport`` objects
  (what the package itself sends through, without the client's cookie,
  auth and redirect layers), the best one reported.

Ratios are wall time against the best floor.

    python -m benchmarks.b2_fanout --n 10 100
"""

from __future__ import annotations

import argparse
import asyncio
import gc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import llm

import llm_async_attachments as laa
from llm_async_attachments.http.pool import SHARD_CONNECTIONS
from llm_async_attachments.testing import samples
from tests.support.spawned import SpawnedFileServer
from tests.support.stall import measure

SIZE = 64 * 1024
LATENCY = 0.05
MANY = 5000  # for the largest stall of a very wide prepare
SEQUENTIAL_UP_TO = 100  # llm's sequential reads take N x 2 x 50 ms: not run beyond
# (concurrency, connections per client, bare transports instead of clients)
BEST_OF = tuple((c, 16, bare) for c in (16, 32, 64) for bare in (False, True))

Work = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Row:
    requests: int
    stall_ms: float
    wall_s: float


def llm_sequential(urls: list[str]) -> Work:
    """What a plugin's execute() does today: llm's sync reads, on the loop."""

    async def run() -> None:
        for url in urls:
            attachment = llm.Attachment(url=url)
            attachment.resolve_type()
            attachment.content_bytes()

    return run


def to_thread_each(urls: list[str]) -> Work:
    """llm PR #1195 style: the same sync reads, each in asyncio.to_thread."""

    def read(url: str) -> None:
        attachment = llm.Attachment(url=url)
        attachment.resolve_type()
        attachment.content_bytes()

    async def run() -> None:
        await asyncio.gather(*(asyncio.to_thread(read, url) for url in urls))

    return run


def this_package(urls: list[str]) -> Work:
    # The caller's prompt, made before the clock starts, as the floors' URLs are.
    model = llm.get_async_model("echo")
    prompt = llm.Prompt("x", model, attachments=[llm.Attachment(url=u) for u in urls])

    async def run() -> None:
        await laa.prepare_attachments(prompt)  # default settings

    return run


class RawFloor:
    """Shared httpx clients (or bare transports), made and warmed before timing;
    ``concurrency`` GETs at once."""

    def __init__(self, concurrency: int, per_client: int, bare: bool = False) -> None:
        self.concurrency = concurrency
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        count = -(-concurrency // per_client)
        make = (
            (lambda: httpx.AsyncHTTPTransport(limits=limits))
            if bare
            else (lambda: httpx.AsyncClient(limits=limits))
        )
        self.clients: list[Any] = [make() for _ in range(count)]
        self.bare = bare

    async def warm(self, url: str) -> None:
        await self._get_all([url] * self.concurrency)

    def work(self, urls: list[str]) -> Work:
        return lambda: self._get_all(urls)

    async def _get_all(self, urls: list[str]) -> None:
        gate = asyncio.Semaphore(self.concurrency)

        async def get(index: int, url: str) -> None:
            async with gate:
                client = self.clients[index % len(self.clients)]
                if not self.bare:
                    (await client.get(url)).raise_for_status()
                    return
                response = await client.handle_async_request(httpx.Request("GET", url))
                try:
                    await response.aread()
                    assert response.status_code == 200, response.status_code
                finally:
                    await response.aclose()

        await asyncio.gather(*(get(i, url) for i, url in enumerate(urls)))

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


async def floor(
    urls: list[str], warm_url: str, concurrency: int, per_client: int, bare: bool = False
) -> Row:
    raw = RawFloor(concurrency, per_client, bare)
    try:
        await raw.warm(warm_url)
        measured = await measure(raw.work(urls))
    finally:
        await raw.close()
    return Row(len(urls), measured.largest_stall_ms, measured.wall_s)


def run(ns: list[int]) -> dict[int, dict[str, Row]]:
    """For each N: a row per approach."""
    llm.get_async_models()
    laa.configure(laa.Config(guard="off"))  # let llm block, as it does today
    defaults = laa.Config()
    same = (defaults.host_concurrency, SHARD_CONNECTIONS)
    body = samples.sized("png", SIZE)
    results: dict[int, dict[str, Row]] = {}
    with SpawnedFileServer() as server:
        warm_url = server.add("/warm.png", body, content_type="image/png")
        # The HTTP layer imported (B8 measures that), then what start-up allocated is
        # frozen out of the collector's sight, for every approach: see report.md.
        asyncio.run(this_package([warm_url])())
        gc.collect()
        gc.freeze()
        for n in ns:
            urls = [
                server.add(f"/f{n}-{i}.png", body, content_type="image/png", latency=LATENCY)
                for i in range(n)
            ]
            rows: dict[str, Row] = {}
            works: dict[str, Work] = {"llm-async-attachments (defaults)": this_package(urls)}
            if n <= SEQUENTIAL_UP_TO:
                works["llm sync, sequential"] = llm_sequential(urls)
            works["asyncio.to_thread each (#1195)"] = to_thread_each(urls)
            for name, work in works.items():
                server.clear_requests()
                measured = asyncio.run(measure(work))
                rows[name] = Row(server.count(), measured.largest_stall_ms, measured.wall_s)
            server.clear_requests()
            rows[f"raw httpx, {same[0]} at once (same)"] = asyncio.run(floor(urls, warm_url, *same))
            tried = {setting: asyncio.run(floor(urls, warm_url, *setting)) for setting in BEST_OF}
            best = min(tried, key=lambda setting: tried[setting].wall_s)
            kind = "transports" if best[2] else "clients"
            rows[f"raw httpx, best: {best[0]} at once, {kind}"] = tried[best]
            results[n] = rows
            print(report({n: rows}, header=n == ns[0]), flush=True)
        many = [
            server.add(f"/many{i}.png", body[:4096], content_type="image/png") for i in range(MANY)
        ]
        server.clear_requests()
        measured = asyncio.run(measure(this_package(many)))
        print(
            f"\n{MANY} attachments of 4 KiB at once, no latency, defaults: largest stall "
            f"{measured.largest_stall_ms:.1f} ms, {measured.wall_s:.2f} s, "
            f"{server.count()} requests",
            flush=True,
        )
    laa.configure(None)
    return results


def report(results: dict[int, dict[str, Row]], header: bool = True) -> str:
    lines = []
    if header:
        lines += [
            f"B2 fan-out: {SIZE >> 10} KiB PNGs, {LATENCY * 1000:.0f} ms latency, the package "
            "with its defaults; floors warmed, shared httpx clients",
            "",
            f"{'N':>5} {'approach':36} {'requests':>9} {'stall ms':>9} {'wall s':>8} "
            f"{'vs best floor':>14}",
        ]
    for n, rows in results.items():
        best = next(row for name, row in rows.items() if name.startswith("raw httpx, best"))
        for name, row in rows.items():
            lines.append(
                f"{n:>5} {name:36} {row.requests:>9} {row.stall_ms:>9.1f} {row.wall_s:>8.2f} "
                f"{row.wall_s / best.wall_s:>13.2f}x"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[int, dict[str, Row]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 10, 100, 1000])
    args = parser.parse_args(argv)
    return run(args.n)


if __name__ == "__main__":
    main()
