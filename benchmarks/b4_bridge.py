"""B4 bridge: a sync-only model driven from asyncio, three bridges side by side.

The same sync model (10 chunks, 20 ms of waiting each: a sync plugin that
talks HTTP) runs through

* **this package**'s bridge, default configuration;
* **llm-all-models-async** 0.1 (its ``AsyncModelWrapper``, on its shared
  executor: 4 threads as it ships);
* a **plain asyncio.to_thread** bridge (``await asyncio.to_thread(next, ...)``
  per chunk, on asyncio's default executor: ``min(32, cores + 4)`` threads).

Every bridge gets a comparable pool: as many threads for the model as this
package's defaults give one model (``bridge_model_workers``, capped by
``bridge_workers``). The two executors are replaced by pools of that size
whose threads are started before any clock (this package starts a thread
per prompt, and pays for that inside its timings).

Measured in one run, in one process, the same way:

1. wall time and the largest event-loop stall (1 ms ticker) at 1/16/64/256
   concurrent prompts, against the ideal of 10 x 20 ms;
2. cancel-to-stop: a consumer cancelled after 3 chunks; how long until the
   sync generator stops, how many chunks it produces after the cancel, and
   whether its ``finally`` runs through ``close()``;
3. buffer memory: a slow consumer of 10,000 chunks of 1 KiB (traced memory
   peak and most chunks waiting at once);
4. pool size: I/O-bound prompts against CPU-bound ones (GIL-releasing
   hashing, like a local model's native code) at several pool sizes;
5. the cost this package's ``register_models`` hook adds to every llm
   registry call (Datasette's LLM plugin makes one per row);
6. the memory one more concurrent prompt costs: 256 bridged prompts parked
   in a sync model, resident memory and address space per prompt.

No servers are needed. Run it (a minute or so) with:

    .venv/bin/python -m benchmarks.b4_bridge
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
import hashlib
import resource
import statistics
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import llm
from llm.plugins import pm

import llm_async_attachments as laa
from tests.support.stall import measure

CHUNKS = 10
DELAY = 0.02
IDEAL = CHUNKS * DELAY


class Sleepy(llm.Model):
    """A sync-only model: ``chunks`` chunks, each after ``work()`` (default: 20 ms of waiting)."""

    model_id = "sleepy"
    can_stream = True

    def __init__(
        self,
        chunks: int = CHUNKS,
        work: Callable[[], None] = lambda: time.sleep(DELAY),
        size: int = 0,
        model_id: str = "sleepy",
    ) -> None:
        self.model_id = model_id
        self.chunks, self.work, self.size = chunks, work, size
        self.produced = 0
        self.last_chunk_at = 0.0
        self.ended = threading.Event()
        self.ended_by = ""

    def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any) -> Any:
        try:
            for i in range(self.chunks):
                self.work()
                self.produced += 1
                self.last_chunk_at = time.perf_counter()
                yield str(i).ljust(self.size) if self.size else f"{i} "
            self.ended_by = "ran to its end"
        except GeneratorExit:
            self.ended_by = f"close() on {threading.current_thread().name}"
            raise
        finally:
            self.ended.set()


class ToThread(llm.AsyncModel):
    """The plain bridge: each ``next()`` of the sync generator in ``asyncio.to_thread``."""

    model_id = "sleepy"
    can_stream = True

    def __init__(self, sync_model: Sleepy) -> None:
        self.sync_model = sync_model

    async def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any) -> Any:
        chunks = self.sync_model.execute(prompt, stream, response, conversation)
        end = object()
        while (chunk := await asyncio.to_thread(next, chunks, end)) is not end:
            yield chunk


def all_models_async(sync_model: Sleepy) -> llm.AsyncModel:
    import llm_all_models_async  # type: ignore[import-untyped]

    wrapper: llm.AsyncModel = llm_all_models_async.AsyncModelWrapper(sync_model)
    return wrapper


BRIDGES: dict[str, Callable[[Sleepy], Any]] = {
    "this package": laa.bridge_model,
    "llm-all-models-async": all_models_async,
    "asyncio.to_thread": ToThread,
}


def model_workers() -> int:
    """Threads this package's bridge gives one model with its default configuration."""
    defaults = laa.Config()
    return min(defaults.bridge_model_workers, defaults.bridge_workers)


async def _started(pool: concurrent.futures.ThreadPoolExecutor, workers: int) -> None:
    barrier = threading.Barrier(workers)  # all waiting at once: every thread exists
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(pool, barrier.wait) for _ in range(workers)))


@contextlib.asynccontextmanager
async def comparable_pools(workers: int) -> AsyncIterator[None]:
    """The other bridges' executors, ``workers`` threads each, their threads started."""
    import llm_all_models_async

    loop = asyncio.get_running_loop()
    to_thread = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="b4-to-thread")
    loop.set_default_executor(to_thread)  # asyncio.run() shuts it down
    theirs = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="b4-all-models")
    shipped, llm_all_models_async._executor = llm_all_models_async._executor, theirs
    await _started(to_thread, workers)
    await _started(theirs, workers)
    try:
        yield
    finally:
        llm_all_models_async._executor = shipped
        theirs.shutdown(wait=False)


# --- 1. concurrency ------------------------------------------------------------------


async def concurrency(counts: list[int]) -> None:
    print("\n## 1. Concurrent prompts (10 chunks x 20 ms each; ideal 0.20 s)\n")
    print(
        f"Every bridge has {model_workers()} threads for the model: this package's default "
        "per model; llm-all-models-async's executor (4 threads as shipped) and asyncio's "
        "default executor (min(32, cores + 4)) replaced by pools of that size, their threads "
        "started before the clock.\n"
    )
    print("| prompts | bridge | wall | vs ideal | largest stall | vs this package |")
    print("|---|---|---|---|---|---|")
    for n in counts:
        ours = 0.0
        for name, make in BRIDGES.items():
            model = make(Sleepy())

            async def run(model: Any = model, n: int = n) -> None:
                texts = await asyncio.gather(*(model.prompt(f"p{i}").text() for i in range(n)))
                assert all(len(text.split()) == CHUNKS for text in texts)

            measured = await measure(run)
            ours = ours or measured.wall_s
            print(
                f"| {n} | {name} | {measured.wall_s:.2f} s | {measured.wall_s / IDEAL:.1f}x "
                f"| {measured.largest_stall_ms:.0f} ms | {measured.wall_s / ours:.1f}x |"
            )


# --- 2. cancellation -----------------------------------------------------------------


async def cancel_to_stop() -> None:
    print("\n## 2. Cancel-to-stop (consumer cancelled after 3 of 100 chunks of 20 ms)\n")
    print("| bridge | generator stopped after | chunks after the cancel | its finally |")
    print("|---|---|---|---|")
    for name, make in BRIDGES.items():
        sync = Sleepy(chunks=100)
        response = make(sync).prompt("x")
        three = asyncio.Event()

        async def consume(response: Any = response, three: asyncio.Event = three) -> None:
            received = 0
            async for _ in response:
                received += 1
                if received == 3:
                    three.set()

        task = asyncio.create_task(consume())
        await three.wait()
        produced, cancelled_at = sync.produced, time.perf_counter()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        ended = await asyncio.to_thread(sync.ended.wait, 5)
        stopped = max(sync.last_chunk_at - cancelled_at, 0.0)
        finally_ran = sync.ended_by if ended else "not run (in 5 s)"
        print(f"| {name} | {stopped * 1000:.0f} ms | {sync.produced - produced} | {finally_ran} |")


# --- 3. slow consumer ----------------------------------------------------------------


async def slow_consumer(chunks: int = 10_000, size: int = 1024) -> None:
    print(f"\n## 3. Slow consumer ({chunks:,} chunks of {size} B, {chunks * size >> 20} MiB)\n")
    print("| bridge | traced memory peak | most chunks waiting | wall |")
    print("|---|---|---|---|")
    for name, make in BRIDGES.items():
        sync = Sleepy(chunks=chunks, work=lambda: None, size=size)
        model = make(sync)
        response = model.prompt("x")
        consumed = waiting = 0
        gc.collect()
        tracemalloc.start()
        started = time.perf_counter()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            async for _ in model.execute(response.prompt, True, response, None):
                consumed += 1
                waiting = max(waiting, sync.produced - consumed)
                await asyncio.sleep(0)  # the consumer is the slow side
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()
        wall = time.perf_counter() - started
        print(f"| {name} | {peak / 2**20:.2f} MiB | {waiting:,} | {wall:.2f} s |")


# --- 4. pool size --------------------------------------------------------------------


def hashing(seconds: float) -> Callable[[], None]:
    """CPU work that releases the GIL, as a local model's native code does."""
    block = bytes(1 << 20)
    once = []
    for _ in range(5):
        started = time.perf_counter()
        hashlib.sha256(block).digest()
        once.append(time.perf_counter() - started)
    rounds = max(1, round(seconds / min(once)))

    def work() -> None:
        for _ in range(rounds):
            hashlib.sha256(block).digest()

    return work


async def pool_size() -> None:
    print("\n## 4. Pool size: bridge_model_workers, I/O-bound vs CPU-bound\n")
    print("| model | prompts | model workers | wall | largest stall |")
    print("|---|---|---|---|---|")
    cpu = hashing(0.01)
    cases: list[tuple[str, int, Callable[[], Sleepy], tuple[int, ...]]] = [
        ("I/O-bound, 10 x 20 ms", 256, lambda: Sleepy(), (16, 32, 64, 128, 256)),
        ("CPU-bound, 5 x 10 ms", 16, lambda: Sleepy(chunks=5, work=cpu), (1, 2, 16)),
    ]
    for label, n, make, sizes in cases:
        for size in sizes:
            total = max(size, laa.Config().bridge_workers)
            config = dataclasses.replace(
                laa.Config(), bridge_model_workers=size, bridge_workers=total
            )
            laa.configure(config)
            model = laa.bridge_model(make())

            async def run(model: Any = model, n: int = n) -> None:
                await asyncio.gather(*(model.prompt(f"p{i}").text() for i in range(n)))

            measured = await measure(run)
            print(
                f"| {label} | {n} | {size} | {measured.wall_s:.2f} s "
                f"| {measured.largest_stall_ms:.0f} ms |"
            )
    laa.configure(laa.Config())


# --- 5. registry hook ----------------------------------------------------------------


def registry_cost(rounds: int) -> None:
    print("\n## 5. This package's register_models hook, per llm registry call\n")
    plugin = pm.get_plugin("async_attachments")
    assert plugin is not None, "llm's plugins are not loaded"

    def per_call(call: Callable[[], object], times: int = 50) -> float:
        started = time.perf_counter()
        for _ in range(times):
            call()
        return (time.perf_counter() - started) / times * 1e6

    print("| call | without the package | with it | added |")
    print("|---|---|---|---|")
    for label, call in [
        ("llm.get_async_models()", llm.get_async_models),
        ('llm.get_async_model("markov")', lambda: llm.get_async_model("markov")),
    ]:
        without, with_it = [], []
        for _ in range(rounds):  # interleaved, so that drift hits both alike
            pm.unregister(plugin)
            try:
                without.append(per_call(call))
            finally:
                pm.register(plugin, name="async_attachments")
            with_it.append(per_call(call))
        a, b = statistics.median(without), statistics.median(with_it)
        print(f"| {label} | {a:.0f} µs | {b:.0f} µs | {b - a:+.0f} µs |")

    print("\nThe hook alone (its body, timed on fresh registry entries):\n")
    print("| models | sync-only | hook, bridge off | hook, bridge on | per bridged model |")
    print("|---|---|---|---|---|")
    pm.unregister(plugin)
    try:
        installed = llm.get_models_with_aliases()
    finally:
        pm.register(plugin, name="async_attachments")
    sync_only: Any = None  # llm's own entries for sync-only models have no async model
    more = [
        llm.models.ModelWithAliases(Sleepy(model_id=f"m{i}"), sync_only, set()) for i in range(100)
    ]
    for entries in (installed, installed + more):
        costs = []
        for bridge in (False, True):
            laa.configure(dataclasses.replace(laa.Config(), bridge=bridge))
            fresh = [
                [llm.models.ModelWithAliases(e.model, e.async_model, e.aliases) for e in entries]
                for _ in range(1000)
            ]
            started = time.perf_counter()
            for copy in fresh:
                hook = plugin.register_models(register=None, model_aliases=copy)
                next(hook)
                next(hook, None)
            costs.append((time.perf_counter() - started) / len(fresh) * 1e6)
        ours = laa.bridge_model.__module__
        bridged = sum(1 for e in fresh[0] if type(e.async_model).__module__ == ours)
        print(
            f"| {len(entries)} | {bridged} | {costs[0]:.1f} µs | {costs[1]:.1f} µs "
            f"| {(costs[1] - costs[0]) / bridged:.1f} µs |"
        )
    laa.configure(laa.Config())


# --- 6. memory per prompt ------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


async def prompt_memory(n: int = 256) -> None:
    print(f"\n## 6. Memory per concurrent prompt ({n} prompts parked in a sync model)\n")
    gate = threading.Event()

    def parked() -> None:
        gate.wait(30)

    def running() -> int:
        return sum(thread.name == "llm-bridge[sleepy]" for thread in threading.enumerate())

    model = laa.bridge_model(Sleepy(chunks=1, work=parked))
    workers = model_workers()
    before = _status_kib("VmRSS"), _status_kib("VmSize")
    tasks = [asyncio.create_task(model.prompt(f"p{i}").text()) for i in range(n)]
    try:
        async with asyncio.timeout(30):
            while running() < min(n, workers):  # noqa: ASYNC110 - counted across threads
                await asyncio.sleep(0.01)
        during = _status_kib("VmRSS"), _status_kib("VmSize")
    finally:
        gate.set()
        await asyncio.gather(*tasks)
    resident, address = ((b - a) / min(n, workers) for a, b in zip(before, during, strict=True))
    print("| prompts running | resident memory per prompt | address space per prompt |")
    print("|---|---|---|")
    print(f"| {min(n, workers)} | {resident:.0f} KiB | {address / 1024:.1f} MiB |")
    print(
        f"\n(The address space is mostly each thread's stack, reserved at the size of "
        f"`ulimit -s` ({resource.getrlimit(resource.RLIMIT_STACK)[0] >> 10} KiB here) "
        "and only used as the thread touches it.)"
    )


async def main(counts: list[int]) -> None:
    laa.configure(laa.Config())  # the defaults, whatever the environment says
    llm.get_async_models()  # load plugins before any clock starts
    async with comparable_pools(model_workers()):
        await concurrency(counts)
        await cancel_to_stop()
        await slow_consumer()
    await pool_size()


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--rounds", type=int, default=20, help="registry timing rounds")
    args = parser.parse_args(argv)
    asyncio.run(main(args.n))
    registry_cost(args.rounds)
    asyncio.run(prompt_memory())


if __name__ == "__main__":
    run()
