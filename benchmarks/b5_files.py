"""B5 local files: prepare N path attachments of 1 MiB, side by side with its floors.

Each approach reads the same N files (PNGs of 1 MiB, in the page cache: every
file is read once before any clock starts) in a fresh ``asyncio.run()``, and
is measured the same way: wall time, and the largest stall a 1 ms ticker saw
on the event loop. In the order printed:

* **llm sync, on the loop**: ``resolve_type()``, ``content_bytes()`` and
  ``id()`` of each attachment (llm's own blocking reads: what an async
  plugin's ``execute()`` and llm's logging do today), for reference;
* **to_thread(read_bytes), same concurrency**: the floor. ``Path.read_bytes``
  per file in ``asyncio.to_thread``, gathered, with as many at once as the
  package runs (``files.JOBS``, the default executor's size);
* **to_thread(read_bytes), best concurrency**: the same on an executor of
  k threads with k at once, for k in 1, 2, 4, 8, 16, 32; the best k is shown;
* **to_thread(read + sha256 + sniff)**: the floor doing the package's work
  too (llm's ``id()`` of a path is the SHA-256 of its bytes, and its type
  is sniffed with puremagic, as llm does), same concurrency, no checks;
* **llm-async-attachments**: ``prepare_attachments()`` with the default
  configuration except ``max_total_bytes``, raised to fit N files
  (the default of 128 MiB refuses more than 128 files of 1 MiB).

For every approach, alike: the executor's threads are started before the
clock (as a warm application's are), what was read is kept until the clock
stops (freeing hundreds of MiB is not timed), and the objects made before
the first run are frozen out of the garbage collector's sight (as the test
suite does), so a full collection lands in no approach's timed region.
Runs are repeated and interleaved; the median wall time and the median of
the largest stalls are shown. Ratios are wall times against the floor at the
same concurrency, and against the floor at its best concurrency.

    python -m benchmarks.b5_files --n 10 100
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import functools
import gc
import hashlib
import os
import statistics
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import llm

import llm_async_attachments as laa
from llm_async_attachments import mime
from llm_async_attachments.core import files
from llm_async_attachments.testing import samples
from tests.support.stall import measure

SIZE = 1024 * 1024
CONCURRENCIES = (1, 2, 4, 8, 16, 32)
# asyncio's default executor's size (concurrent.futures' default for I/O-bound work).
DEFAULT_WORKERS = min(32, (os.cpu_count() or 1) + 4)

LLM_SYNC = "llm sync, on the loop"
FLOOR = "to_thread(read_bytes), same concurrency"
BEST = "to_thread(read_bytes), best concurrency"
WORK = "to_thread(read + sha256 + sniff)"
OURS = "llm-async-attachments"
APPROACHES = (LLM_SYNC, FLOOR, BEST, WORK, OURS)


class Row(NamedTuple):
    wall_s: float
    stall_ms: float
    concurrency: int | None  # files read at once; None: one after another on the loop


Work = Callable[[], Awaitable[None]]


def llm_sync(paths: list[Path], kept: list[Any]) -> Work:
    """llm's own reads, on the loop: the type, the bytes and the id."""

    async def run() -> None:
        for path in paths:
            attachment = llm.Attachment(path=str(path))
            attachment.resolve_type()  # type: ignore[no-untyped-call]
            attachment.id()  # type: ignore[no-untyped-call]
            kept.append(attachment.content_bytes())  # type: ignore[no-untyped-call]

    return run


def gathered(
    paths: list[Path], kept: list[Any], concurrency: int, read: Callable[[Path], object]
) -> Work:
    """``read(path)`` per file in ``asyncio.to_thread``, ``concurrency`` at once."""

    async def run() -> None:
        slots = asyncio.Semaphore(concurrency)

        async def one(path: Path) -> object:
            async with slots:
                return await asyncio.to_thread(read, path)

        kept.append(await asyncio.gather(*(one(path) for path in paths)))

    return run


def read_bytes(path: Path) -> bytes:
    return path.read_bytes()


def read_hash_sniff(path: Path) -> tuple[bytes, str, str | None]:
    content = path.read_bytes()
    return content, hashlib.sha256(content).hexdigest(), mime.sniff(content, filename=str(path))


def this_package(paths: list[Path], kept: list[Any]) -> Work:
    config = dataclasses.replace(laa.Config(), max_total_bytes=max(len(paths), 1) * SIZE + SIZE)
    model = llm.get_async_model("echo")  # the plugin registry is not part of preparing

    async def run() -> None:
        attachments = [llm.Attachment(path=str(path)) for path in paths]
        prompt = llm.Prompt("x", model, attachments=attachments)  # type: ignore[no-untyped-call]
        kept.append(prompt)
        await laa.prepare_attachments(prompt, config=config)

    return run


async def _warmed(work: Work, workers: int | None) -> tuple[float, float]:
    """Measure ``work`` on this loop, its default executor's threads started first."""
    loop = asyncio.get_running_loop()
    size = workers or DEFAULT_WORKERS
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(size))
    started = threading.Barrier(size)  # every thread at once: all of them exist
    await asyncio.gather(*(loop.run_in_executor(None, started.wait) for _ in range(size)))
    measured = await measure(work)
    return measured.wall_s, measured.largest_stall_ms


def _run(work: Callable[[list[Any]], Work], workers: int | None = None) -> tuple[float, float]:
    kept: list[Any] = []
    result = asyncio.run(_warmed(work(kept), workers))
    kept.clear()
    gc.collect()
    return result


def run(ns: list[int], repeat: int) -> dict[int, dict[str, Row]]:
    """For each N and approach: median wall seconds, median largest stall, concurrency."""
    laa.configure(dataclasses.replace(laa.Config(), guard="off"))  # let llm block, as today
    llm.get_async_models()  # load plugins before any clock starts
    body = samples.sized("png", SIZE)
    results: dict[int, dict[str, Row]] = {}
    gc.collect()
    gc.freeze()
    try:
        with tempfile.TemporaryDirectory(prefix="b5-") as folder:
            for n in ns:
                paths = [Path(folder, f"f{n}-{i}.png") for i in range(n)]
                for path in paths:
                    path.write_bytes(body)
                    path.read_bytes()  # in the page cache, for every approach alike
                results[n] = _compare(paths, repeat)
                print(report({n: results[n]}, header=n == ns[0]), flush=True)
                for path in paths:
                    path.unlink()
    finally:
        gc.unfreeze()
        laa.configure(None)
    return results


def _compare(paths: list[Path], repeat: int) -> dict[str, Row]:
    jobs = files.JOBS
    runs: dict[str, list[tuple[float, float]]] = {}
    best: dict[int, list[tuple[float, float]]] = {}
    for _ in range(repeat):  # interleaved, so that drift hits every approach alike
        runs.setdefault(LLM_SYNC, []).append(_run(functools.partial(llm_sync, paths)))
        floor = functools.partial(gathered, paths, concurrency=jobs, read=read_bytes)
        runs.setdefault(FLOOR, []).append(_run(floor))
        for k in CONCURRENCIES:
            at_k = functools.partial(gathered, paths, concurrency=k, read=read_bytes)
            best.setdefault(k, []).append(_run(at_k, workers=k))
        work = functools.partial(gathered, paths, concurrency=jobs, read=read_hash_sniff)
        runs.setdefault(WORK, []).append(_run(work))
        runs.setdefault(OURS, []).append(_run(functools.partial(this_package, paths)))

    def median(measured: list[tuple[float, float]], k: int | None) -> Row:
        return Row(
            statistics.median(wall for wall, _ in measured),
            statistics.median(stall for _, stall in measured),
            k,
        )

    best_k = min(best, key=lambda k: statistics.median(wall for wall, _ in best[k]))
    return {
        LLM_SYNC: median(runs[LLM_SYNC], None),
        FLOOR: median(runs[FLOOR], jobs),
        BEST: median(best[best_k], best_k),
        WORK: median(runs[WORK], jobs),
        OURS: median(runs[OURS], jobs),
    }


def report(results: dict[int, dict[str, Row]], header: bool = True) -> str:
    lines = []
    if header:
        lines += [
            f"B5 local files: PNGs of {SIZE >> 20} MiB in the page cache; the package at its "
            f"defaults, {files.JOBS} files at once,",
            "except max_total_bytes raised to N MiB + 1 MiB (the default 128 MiB holds 128 "
            "files of 1 MiB)",
            "",
            f"{'N':>4} {'approach':42} {'at once':>7} {'wall s':>8} {'stall ms':>9} "
            f"{'vs floor':>9} {'vs best':>8}",
        ]
    for n, rows in results.items():
        floor, best = rows[FLOOR].wall_s, rows[BEST].wall_s
        for name, (wall, stall, concurrency) in rows.items():
            at_once = "1, loop" if concurrency is None else str(concurrency)
            lines.append(
                f"{n:>4} {name:42} {at_once:>7} {wall:>8.3f} {stall:>9.1f} "
                f"{wall / floor:>8.2f}x {wall / best:>7.2f}x"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[int, dict[str, Row]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 10, 100, 500])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each approach")
    args = parser.parse_args(argv)
    return run(args.n, args.repeat)


if __name__ == "__main__":
    main()
