"""B9 a fleet: worker processes sharing URL responses through the disk tier and Redis.

Worker processes (``tests/support/cache_worker.py``: fresh interpreters, each with its
own event loop and llm-echo's async model) run the same workload against one loopback
file server (in a process of its own): 8 workers, each 300 prompts of 3 URLs drawn
(seeded) from the same 40, 4 prompts at a time; every URL 64 KiB, 50 ms latency,
``Cache-Control: max-age=600``. Side by side, in one run, on a fresh set of 40 URLs each:

* **memory only**: ``disk_cache_bytes=0``; each process fetches what it needs itself;
* **disk**: one SQLite disk tier (one directory) for the 8 processes, one machine;
* **Redis**: two "machines" of 4 processes, each with a disk directory of its own,
  sharing one ``redis-server`` (started here on loopback, persistence off).

The disk and Redis runs are made twice: with workers *started cold* (their first
prepare is the workload's, as after a deploy) and with workers that have each
fetched one other URL first, with no tier (*after one fetch each*: as a worker that has
served before; the first fetch imports the HTTP layer). One more disk run gives each
worker a budget (``cache_bytes``) of 1 MiB, below the 40 URLs' 2.5 MiB: what leaves
memory comes back from the disk, not the origin.

Reported: origin requests per URL (the goal with a shared tier: 1.1 at most), the
wall time of the workload, and the workers' resident set after start-up (median) and
at its peak (the largest), against ``cache_bytes``. Warnings the workers reported are
listed under the tables.

Then the latency of a hit from each tier, next to a memory hit: one
``prepare_attachments()`` of one cached URL, timed inside the worker (p50 and p99 over
:data:`TIMED` URLs, each prepared once). A writer process fetches the URLs (to its
disk and Redis); a fresh process on the same disk directory prepares each once (a disk
hit: its memory has none of them), then each again (a memory hit); a fresh process with
an empty disk directory of its own prepares each once from Redis (which also copies it
to its disk). Both readers first prepare one other URL, so that what is timed is the
hit, not the import of the HTTP layer.

Without ``redis-server`` (or the ``redis`` extra) the Redis rows are skipped, with a
message saying how to install it.

    python -m benchmarks.b9_fleet --workers 8 --urls 40 --prompts 300
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.cache_worker import (
    CacheWorker,
    broadcast,
    digest,
    start_workers,
    stop_workers,
)
from tests.support.spawned import SpawnedFileServer

KiB = 1024
MiB = 1024 * KiB
SIZE = 64 * KiB
LATENCY = 0.05
PER_PROMPT = 3  # URLs in each prompt
AT_ONCE = 4  # prompts a worker prepares at a time
CACHE_BYTES = 16 * MiB  # each worker's memory budget: the 40 URLs (2.5 MiB) fit
SMALL_BUDGET = 1 * MiB  # 16 of them fit: the others come back from the disk
TIMED = 400  # URLs whose hit is timed, once each per tier
NAME_WIDTH = 44
WARNINGS: set[str] = set()  # every warning a worker reported, shown under the tables
INSTALL = "apt-get install -y redis-server, and pip install 'llm-async-attachments[redis]'"


@dataclass(frozen=True)
class Row:
    """One workload run: how many processes, what the origin saw, time and memory."""

    processes: int
    urls: int
    requests: int
    wall_s: float
    peak_rss_mib: float
    """The largest peak resident set of any worker."""
    start_rss_mib: float
    """The median resident set of the workers after start-up, before any prepare."""
    budget_mib: float
    """Their ``cache_bytes``."""

    @property
    def per_url(self) -> float:
        return self.requests / self.urls


@dataclass(frozen=True)
class Latency:
    p50_us: float
    p99_us: float


def redis_missing() -> str | None:
    """Why the Redis rows cannot run, or ``None`` if they can."""
    if shutil.which("redis-server") is None:
        return f"redis-server is not installed ({INSTALL})"
    if importlib.util.find_spec("redis") is None:
        return f"the redis client is not installed ({INSTALL})"
    return None


def body(name: str) -> bytes:
    """64 KiB of seeded random bytes behind a PNG signature (llm-echo takes PNGs)."""
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + random.Random(name).randbytes(SIZE - len(signature))


def serve(server: SpawnedFileServer, name: str, count: int, latency: float) -> dict[str, str]:
    """``count`` URLs of their own bodies, ``max-age=600``: URL -> the body's SHA-256."""
    urls = {}
    for number in range(count):
        content = body(f"{name}-{number}")
        url = server.add(
            f"/{name}/{number}.png",
            content,
            content_type="image/png",
            latency=latency,
            headers=[["Cache-Control", "max-age=600"]],
        )
        urls[url] = digest(content)
    return urls


def workload(urls: list[str], workers: int, prompts: int, seed: str) -> list[list[list[str]]]:
    """Each worker's prompts: ``PER_PROMPT`` URLs drawn from ``urls``, overlapping."""
    rng = random.Random(seed)
    return [[rng.sample(urls, PER_PROMPT) for _ in range(prompts)] for _ in range(workers)]


def checked(answers: list[dict[str, Any]], urls: dict[str, str]) -> list[dict[str, Any]]:
    """``answers``, after checking that every prepare worked and read its URL's bytes."""
    for answer in answers:
        WARNINGS.update(f"{w['category']}: {w['message']}" for w in answer["warnings"])
        for prompt in answer["prompts"]:
            if "error" in prompt:
                raise RuntimeError(f"a prepare failed: {prompt['error']}")
            for each in prompt["got"]:
                if each["sha256"] != urls[each["url"]]:
                    raise RuntimeError(f"{each['url']} read the wrong bytes")
    return answers


def run_workload(
    server: SpawnedFileServer,
    name: str,
    configs: list[dict[str, Any]],
    urls: int,
    prompts: int,
    *,
    warm: bool,
) -> Row:
    """The workload on fresh workers, one per config, started together; ``warm``: each
    has fetched one other URL first (no tier), as a worker that served before has."""
    served = serve(server, name, urls, LATENCY)
    orders = workload(list(served), len(configs), prompts, name)
    team = start_workers(len(configs), name)
    try:
        start = [worker.call("stats") for worker in team]
        if warm:
            first = serve(server, f"{name}-warm", len(team), 0.0)
            arguments = [{"config": {"disk_cache_bytes": 0}, "prompts": [[url]]} for url in first]
            checked(broadcast(team, "prepare", arguments), first)
        server.clear_requests()
        started = time.perf_counter()
        arguments = [
            {"config": config, "prompts": order, "at_once": AT_ONCE}
            for config, order in zip(configs, orders, strict=True)
        ]
        checked(broadcast(team, "prepare", arguments), served)
        wall = time.perf_counter() - started
        requests = server.count()
        end = [worker.call("stats") for worker in team]
    finally:
        stop_workers(team)
    return Row(
        len(configs),
        urls,
        requests,
        wall,
        max(each["peak_rss_kib"] for each in end) / KiB,
        statistics.median(each["rss_kib"] for each in start) / KiB,
        configs[0]["cache_bytes"] / MiB,
    )


def timed_hits(worker: CacheWorker, config: dict[str, Any], urls: dict[str, str]) -> Latency:
    """One prepare per URL, one after another; p50 and p99 of the time each took."""
    (answer,) = checked([worker.prepare(config, [[url] for url in urls])], urls)
    if any(prompt["requests"] for prompt in answer["prompts"]):
        raise RuntimeError("a timed hit asked the origin")
    seconds = [prompt["seconds"] for prompt in answer["prompts"]]
    percentiles = statistics.quantiles(seconds, n=100, method="inclusive")
    return Latency(percentiles[49] * 1e6, percentiles[98] * 1e6)


def hit_latencies(
    server: SpawnedFileServer, scratch: Path, redis_url: str | None
) -> dict[str, Latency]:
    """Memory, disk and (with ``redis_url``) Redis hits, each timed in a fresh process."""
    urls = serve(server, "timed", TIMED, 0.0)
    warm = serve(server, "warm", 2, 0.0)
    warm_disk, warm_redis = warm  # one URL each reader prepares first, untimed
    disk = scratch / "timed-disk"
    config = {"cache_bytes": 4 * TIMED * SIZE, "disk_cache_dir": str(disk)}
    if redis_url is not None:
        config["shared_cache_url"] = redis_url
    results: dict[str, Latency] = {}
    (writer,) = start_workers(1, "writer")
    try:
        checked([writer.prepare(config, [[url] for url in urls])], urls)
    finally:
        stop_workers([writer])
    (reader,) = start_workers(1, "disk-reader")
    try:
        checked([reader.prepare(config, [[warm_disk]])], warm)
        results["disk (SQLite)"] = timed_hits(reader, config, urls)
        results["memory"] = timed_hits(reader, config, urls)
    finally:
        stop_workers([reader])
    if redis_url is not None:
        elsewhere = {**config, "disk_cache_dir": str(scratch / "timed-empty-disk")}
        (reader,) = start_workers(1, "redis-reader")
        try:
            checked([reader.prepare(elsewhere, [[warm_redis]])], warm)
            results["Redis (copied to an empty disk)"] = timed_hits(reader, elsewhere, urls)
        finally:
            stop_workers([reader])
    return {name: results[name] for name in sorted(results, key=_tier_order)}


def _tier_order(name: str) -> int:
    return ["memory", "disk", "Redis"].index(name.split()[0])


def report(
    rows: dict[str, Row | str],
    latencies: dict[str, Latency],
    workers: int,
    urls: int,
    prompts: int,
) -> str:
    lines = [
        f"B9 a fleet: {workers} worker processes x {prompts} prompts of {PER_PROMPT} URLs "
        f"drawn from {urls} ({SIZE >> 10} KiB, {LATENCY * 1000:.0f} ms latency, "
        f"max-age=600), {AT_ONCE} prompts at a time each",
        "",
        f"{'tiers':{NAME_WIDTH}} {'processes':>9} {'requests':>9} {'per URL':>8} "
        f"{'wall s':>7} {'cache_bytes':>11} {'RSS at start':>13} {'peak RSS':>9}",
    ]
    for name, row in rows.items():
        if isinstance(row, str):
            lines.append(f"{name:{NAME_WIDTH}} skipped: {row}")
            continue
        lines.append(
            f"{name:{NAME_WIDTH}} {row.processes:>9} {row.requests:>9} {row.per_url:>8.2f} "
            f"{row.wall_s:>7.2f} {row.budget_mib:>7.0f} MiB {row.start_rss_mib:>9.1f} MiB "
            f"{row.peak_rss_mib:>5.1f} MiB"
        )
    memory = latencies["memory"]
    lines += [
        "",
        f"One prepare_attachments() of one cached {SIZE >> 10} KiB URL, timed in the worker "
        f"({TIMED} URLs, each once; a fresh process for each tier's hits):",
        "",
        f"{'hit from':{NAME_WIDTH}} {'p50 us':>9} {'p99 us':>9} {'p50 vs memory':>14}",
    ]
    for name, latency in latencies.items():
        lines.append(
            f"{name:{NAME_WIDTH}} {latency.p50_us:>9.0f} {latency.p99_us:>9.0f} "
            f"{latency.p50_us / memory.p50_us:>13.1f}x"
        )
    if WARNINGS:
        lines += ["", "Warnings the workers reported:", *sorted(WARNINGS)]
    return "\n".join(lines)


def run(workers: int, urls: int, prompts: int) -> dict[str, Any]:
    missing = redis_missing()
    rows: dict[str, Row | str] = {}
    with tempfile.TemporaryDirectory(prefix="laa-b9-") as scratch, SpawnedFileServer() as server:
        root = Path(scratch)
        budget = {"cache_bytes": CACHE_BYTES}

        def each(name: str, configs: list[dict[str, Any]], *, warm: bool = False) -> Row:
            return run_workload(server, name, configs, urls, prompts, warm=warm)

        rows["memory only (disk_cache_bytes=0)"] = each(
            "memory", [{**budget, "disk_cache_bytes": 0}] * workers
        )
        for warm, started in ((False, "started cold"), (True, "after one fetch each")):
            disk = {**budget, "disk_cache_dir": str(root / f"one-disk-{started}")}
            rows[f"disk: one directory, {started}"] = each(
                f"disk-{warm}", [disk] * workers, warm=warm
            )
        small = {"cache_bytes": SMALL_BUDGET, "disk_cache_dir": str(root / "small-budget")}
        rows[f"disk: {SMALL_BUDGET >> 20} MiB budget, after one fetch each"] = each(
            "small", [small] * workers, warm=True
        )
        if missing is not None:
            rows[f"Redis: 2 machines x {workers // 2}"] = missing
            latencies = hit_latencies(server, root, None)
        else:
            from tests.support.redis_server import RedisServer

            with RedisServer() as redis:  # persistence off, on 127.0.0.1
                for warm, started in ((False, "started cold"), (True, "after one fetch each")):
                    machines = [
                        {
                            **budget,
                            "disk_cache_dir": str(root / f"{machine}-{started}"),
                            "shared_cache_url": redis.url,
                        }
                        for machine in ("machine-1", "machine-2")
                    ]
                    configs = [machines[index * 2 // workers] for index in range(workers)]
                    rows[f"Redis: 2 machines x {workers // 2}, {started}"] = each(
                        f"fleet-{warm}", configs, warm=warm
                    )
                redis.flush()
                latencies = hit_latencies(server, root, redis.url)
    print(report(rows, latencies, workers, urls, prompts), flush=True)
    return {"rows": rows, "latencies": latencies}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--urls", type=int, default=40)
    parser.add_argument("--prompts", type=int, default=300)
    args = parser.parse_args(argv)
    return run(args.workers, args.urls, args.prompts)


if __name__ == "__main__":
    main()
