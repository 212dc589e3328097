"""What the shared disk tier costs a first fetch: one prepare, disk tier on and off.

Each run is one ``prepare_attachments()`` of N URLs in a fresh process (nothing in
memory, an empty disk directory), against a loopback server in a process of its own,
the package with its defaults but ``disk_cache_bytes``. With the tier on, every miss
is claimed in the database (so that one process of a machine fetches it), then either
released (a response HTTP does not let us keep) or written (``max-age``). The two
settings run interleaved, three rounds; the median and the range are reported.

    python -m benchmarks.b2_disk_cost
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import subprocess
import sys
import tempfile
from typing import NamedTuple

import llm

import llm_async_attachments as laa
from llm_async_attachments.testing import samples
from tests.support.spawned import SpawnedFileServer
from tests.support.stall import measure

ROUNDS = 3


class Case(NamedTuple):
    count: int
    size: int
    latency: float
    headers: tuple[tuple[str, str], ...]

    def describe(self) -> str:
        kept = "max-age, kept" if self.headers else "not cacheable"
        delay = f"{self.latency * 1000:.0f} ms" if self.latency else "no latency"
        return f"{self.count:,} x {self.size >> 10} KiB, {delay}, {kept}"


CASES = (
    Case(1000, 64 * 1024, 0.05, ()),
    Case(1000, 64 * 1024, 0.05, (("Cache-Control", "max-age=3600"),)),
    Case(5000, 4 * 1024, 0.0, ()),
)


def one(case: Case, disk: bool) -> dict[str, float]:
    """In this (fresh) process: one prepare of ``case``; wall seconds, stall, requests."""
    llm.get_async_models()
    body = samples.sized("png", case.size)
    with tempfile.TemporaryDirectory() as directory, SpawnedFileServer() as server:
        size = laa.Config().disk_cache_bytes if disk else 0
        laa.configure(laa.Config(disk_cache_dir=directory, disk_cache_bytes=size))
        model = llm.get_async_model("echo")
        warm = server.add("/warm.png", body, content_type="image/png")
        warming = llm.Prompt("x", model, attachments=[llm.Attachment(url=warm)])
        asyncio.run(laa.prepare_attachments(warming))  # the HTTP layer imported (B8)
        urls = [
            server.add(
                f"/{number}.png",
                body,
                content_type="image/png",
                latency=case.latency,
                headers=case.headers,
            )
            for number in range(case.count)
        ]
        prompt = llm.Prompt("x", model, attachments=[llm.Attachment(url=url) for url in urls])
        gc.collect()
        gc.freeze()  # as B2: what start-up allocated is out of the collector's sight
        server.clear_requests()

        async def work() -> None:
            await laa.prepare_attachments(prompt)

        measured = asyncio.run(measure(work))
        return {
            "wall_s": measured.wall_s,
            "stall_ms": measured.largest_stall_ms,
            "requests": server.count(),
        }


def in_child(case: int, disk: bool) -> dict[str, float]:
    """:func:`one` for ``CASES[case]`` in a fresh process."""
    argv = [sys.executable, "-m", "benchmarks.b2_disk_cost", "--one", str(case), str(disk)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    print(
        f"{'prepare of':<44} {'disk tier':>9} {'median s':>9} {'range s':>12} "
        f"{'stall ms':>9} {'requests':>9} {'on / off':>9}"
    )
    for index, case in enumerate(CASES):
        runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for _ in range(ROUNDS):
            for disk in (True, False):
                runs[disk].append(in_child(index, disk))
        medians = {disk: statistics.median(r["wall_s"] for r in runs[disk]) for disk in runs}
        for disk in (True, False):
            walls = [r["wall_s"] for r in runs[disk]]
            ratio = f"{medians[True] / medians[False]:.2f}x" if disk else ""
            print(
                f"{case.describe():<44} {'on' if disk else 'off':>9} {medians[disk]:>9.2f} "
                f"{min(walls):>5.2f}-{max(walls):<5.2f} "
                f"{max(r['stall_ms'] for r in runs[disk]):>9.1f} "
                f"{int(max(r['requests'] for r in runs[disk])):>9} {ratio:>9}".rstrip(),
                flush=True,
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(one(CASES[int(sys.argv[2])], sys.argv[3] == "True")))
    else:
        main()
