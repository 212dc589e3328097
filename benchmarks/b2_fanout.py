"""B2 fan-out: prepare N URL attachments (64 KiB, 50 ms latency), side by side.

Every approach runs in the same process, against the same loopback server (in
a process of its own), measured the same way: HTTP requests the server saw,
the largest stall a 1 ms ticker saw on the event loop, and wall time. The
package runs with its default settings. The floors are real floors, in three
libraries: raw httpx2 (``httpx2.AsyncClient``), raw aiohttp
(``aiohttp.ClientSession`` on a ``TCPConnector``, whole bodies read) and raw
httpx 0.28 (``httpx.AsyncClient``), each with shared clients created and warmed
(every connection open) before the timed region, a gather over the URLs,

* at the package's concurrency for one host (``Config.host_concurrency``, in
  clients of the pool's shard size, ``SHARD_CONNECTIONS``, as the package's
  pool), and
* at the best of 16, 32 and 64 at once: one client of that many connections;
  for httpx2 and httpx also clients of 16, and each also with bare
  ``AsyncHTTPTransport`` objects (what the package itself sends through,
  without the client's cookie, auth and redirect layers), the best one per
  library reported.

Ratios are wall time against the best floor of all, and against each
library's best.

    python -m benchmarks.b2_fanout --n 10 100
"""

from __future__ import annotations

import argparse
import asyncio
import gc
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import aiohttp
import httpx
import httpx2
import llm

import llm_async_attachments as laa
from llm_async_attachments.http import pool
from llm_async_attachments.testing import samples
from tests.support.spawned import SpawnedFileServer
from tests.support.stall import measure

SIZE = 64 * 1024
LATENCY = 0.05
MANY = 5000  # for the largest stall of a very wide prepare
SEQUENTIAL_UP_TO = 100  # llm's sequential reads take N x 2 x 50 ms: not run beyond
CONCURRENCIES = (16, 32, 64)  # the floors' candidates, besides the package's own
SPLIT = 16  # connections per client of the split candidates (httpx2 and httpx)
NAME_WIDTH = 48

Work = Callable[[], Coroutine[Any, Any, None]]


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


def package_concurrency() -> tuple[int, int]:
    """The package's concurrency for one host, and the connections per client it spreads
    them over: its pool's shard size, or one client if the pool has no shards."""
    concurrency = laa.Config().host_concurrency
    return concurrency, min(concurrency, getattr(pool, "SHARD_CONNECTIONS", concurrency))


class Client(Protocol):
    """One shared client of a floor: a GET that reads the whole body, and a close."""

    async def get(self, url: str) -> None: ...

    async def aclose(self) -> None: ...


class HttpxClient:
    """An ``AsyncClient`` of httpx or httpx2 (the same API) of ``connections``, or,
    ``bare``, its ``AsyncHTTPTransport`` alone."""

    def __init__(self, module: ModuleType, connections: int, bare: bool) -> None:
        limits = module.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.module = module
        self.bare = bare
        self.client: Any = (
            module.AsyncHTTPTransport(limits=limits) if bare else module.AsyncClient(limits=limits)
        )

    async def get(self, url: str) -> None:
        if not self.bare:
            (await self.client.get(url)).raise_for_status()
            return
        response = await self.client.handle_async_request(self.module.Request("GET", url))
        try:
            await response.aread()
            assert response.status_code == 200, response.status_code
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()


class AiohttpClient:
    """An ``aiohttp.ClientSession`` of ``connections``, all of them for one host."""

    def __init__(self, connections: int, bare: bool) -> None:
        assert not bare, "aiohttp has no bare transport"
        connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
        self.session = aiohttp.ClientSession(connector=connector)

    async def get(self, url: str) -> None:
        async with self.session.get(url) as response:
            response.raise_for_status()
            await response.read()

    async def aclose(self) -> None:
        await self.session.close()


# Each library: how to make one client of so many connections (bare or not).
LIBRARIES: dict[str, Callable[[int, bool], Client]] = {
    "httpx2": lambda connections, bare: HttpxClient(httpx2, connections, bare),
    "aiohttp": AiohttpClient,
    "httpx": lambda connections, bare: HttpxClient(httpx, connections, bare),
}
HAS_TRANSPORTS = ("httpx2", "httpx")


@dataclass(frozen=True)
class Setting:
    """``concurrency`` GETs at once through clients of ``per_client`` connections."""

    library: str
    concurrency: int
    per_client: int
    bare: bool = False

    @property
    def clients(self) -> int:
        return -(-self.concurrency // self.per_client)

    def __str__(self) -> str:
        kind = "transport" if self.bare else "session" if self.library == "aiohttp" else "client"
        plural = "s" if self.clients > 1 else ""
        return f"{self.concurrency} at once, {self.clients} {kind}{plural} of {self.per_client}"


def candidates(library: str) -> list[Setting]:
    """The settings a library's best floor is the best of."""
    transports = library in HAS_TRANSPORTS
    return [
        Setting(library, concurrency, per_client, bare)
        for concurrency in CONCURRENCIES
        for per_client in dict.fromkeys((concurrency, SPLIT) if transports else (concurrency,))
        for bare in ((False, True) if transports else (False,))
    ]


class RawFloor:
    """A setting's shared clients, made and warmed before timing; ``concurrency`` GETs
    at once, spread over the clients in turn."""

    def __init__(self, setting: Setting) -> None:
        self.concurrency = setting.concurrency
        make = LIBRARIES[setting.library]
        self.clients = [make(setting.per_client, setting.bare) for _ in range(setting.clients)]

    async def warm(self, url: str) -> None:
        await self._get_all([url] * self.concurrency)

    def work(self, urls: list[str]) -> Work:
        return lambda: self._get_all(urls)

    async def _get_all(self, urls: list[str]) -> None:
        gate = asyncio.Semaphore(self.concurrency)

        async def get(index: int, url: str) -> None:
            async with gate:
                await self.clients[index % len(self.clients)].get(url)

        await asyncio.gather(*(get(i, url) for i, url in enumerate(urls)))

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


async def floor(server: SpawnedFileServer, urls: list[str], warm_url: str, setting: Setting) -> Row:
    raw = RawFloor(setting)  # in the loop: aiohttp's sessions belong to the one they're made in
    try:
        await raw.warm(warm_url)
        server.clear_requests()
        measured = await measure(raw.work(urls))
    finally:
        await raw.close()
    return Row(server.count(), measured.largest_stall_ms, measured.wall_s)


def floors(server: SpawnedFileServer, urls: list[str], warm_url: str) -> dict[str, Row]:
    """Each library's floor at the package's concurrency, then its best."""
    concurrency, per_client = package_concurrency()
    rows: dict[str, Row] = {}
    for library in LIBRARIES:
        same = Setting(library, concurrency, per_client)
        rows[f"raw {library}, {concurrency} at once (same)"] = asyncio.run(
            floor(server, urls, warm_url, same)
        )
        tried = {s: asyncio.run(floor(server, urls, warm_url, s)) for s in candidates(library)}
        best = min(tried, key=lambda setting: tried[setting].wall_s)
        rows[f"raw {library}, best: {best}"] = tried[best]
    return rows


def run(ns: list[int]) -> dict[int, dict[str, Row]]:
    """For each N: a row per approach."""
    llm.get_async_models()
    laa.configure(laa.Config(guard="off"))  # let llm block, as it does today
    body = samples.sized("png", SIZE)
    results: dict[int, dict[str, Row]] = {}
    with SpawnedFileServer() as server:
        warm_url = server.add("/warm.png", body, content_type="image/png")
        # Slow enough that a floor's warm-up has every connection open at once.
        floor_warm_url = server.add(
            "/warm-floor.png", body, content_type="image/png", latency=LATENCY
        )
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
            rows |= floors(server, urls, floor_warm_url)
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


def best_floors(rows: dict[str, Row]) -> dict[str, Row]:
    """Each library's best floor among the rows, by library."""
    return {
        library: row
        for library in LIBRARIES
        for name, row in rows.items()
        if name.startswith(f"raw {library}, best")
    }


def report(results: dict[int, dict[str, Row]], header: bool = True) -> str:
    lines = []
    if header:
        lines += [
            f"B2 fan-out: {SIZE >> 10} KiB PNGs, {LATENCY * 1000:.0f} ms latency, the package "
            "with its defaults; floors warmed, shared clients of " + ", ".join(LIBRARIES),
            "Wall time against the best floor of all, and against each library's best:",
            "",
            f"{'N':>5} {'approach':{NAME_WIDTH}} {'requests':>9} {'stall ms':>9} {'wall s':>8} "
            f"{'vs best':>9}" + "".join(f" {'vs ' + library:>10}" for library in LIBRARIES),
        ]
    for n, rows in results.items():
        bests = best_floors(rows)
        best = min(bests.values(), key=lambda row: row.wall_s)
        for name, row in rows.items():
            lines.append(
                f"{n:>5} {name:{NAME_WIDTH}} {row.requests:>9} {row.stall_ms:>9.1f} "
                f"{row.wall_s:>8.2f} {row.wall_s / best.wall_s:>8.2f}x"
                + "".join(f" {row.wall_s / each.wall_s:>9.2f}x" for each in bests.values())
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[int, dict[str, Row]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 10, 100, 1000])
    args = parser.parse_args(argv)
    return run(args.n)


if __name__ == "__main__":
    main()
