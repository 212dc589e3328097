"""The package's own costs: per prompt, per chunk, per attachment, and base64 on the loop.

0. Per prompt and per streamed chunk, no attachments: llm-echo's async model
   (``await model.prompt("hi").text()``) and a model streaming 1,000 chunks.
   Measured two ways. In a child process per variant, alternately: llm
   alone (``LLM_LOAD_PLUGINS=llm-echo``) and with the package loaded as the
   llm plugin it is (the streaming model's class wrapped as the plugin wraps
   every registered one). And in one child process, prompt by prompt: the
   same classes with their methods unwrapped against wrapped, so that load
   from elsewhere on the machine falls on both alike. Medians of short
   batches, the least disturbed batch of each; the ratio is the package's
   over llm alone's.
1. Overhead: one small URL attachment (1 KiB, no latency) prepared 300 times in
   a row, against 300 bare ``GET``s on a warm pooled ``httpx2.AsyncClient``,
   the same server (in its own process): the median difference is what the
   package adds per attachment (planning, caps, redirect and type handling).
2. base64 on the loop: a 32 MiB attachment, prepared; the stall a 1 ms ticker
   sees while a plugin calls ``base64_content()``, with llm's own method (it
   encodes on the loop, every call) and with this package's (encoded once,
   on a worker thread, during prepare).

    .venv/bin/python -m benchmarks.overhead [--only-prompts]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import httpx2
import llm

import llm_async_attachments as laa
from llm_async_attachments.testing import samples
from tests.support.spawned import SpawnedFileServer
from tests.support.stall import measure

ROUNDS = 300
BIG = 32 * 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "llm alone": "llm-echo",
    "with llm-async-attachments": "llm-echo,llm-async-attachments",
}
CHUNKS = 1000
Prompt: Any = llm.Prompt  # untyped in llm
BATCH = 200  # prompts
STREAM_BATCH = 10  # streams of CHUNKS chunks


class Chunks(llm.AsyncModel):
    """Streams as many one-character chunks as its prompt says."""

    model_id = "chunks"
    can_stream = True

    async def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any = None
    ) -> AsyncGenerator[str, None]:
        for _ in range(int(prompt.prompt)):
            yield "x"


async def timed(model: Any, text: str) -> float:
    started = time.perf_counter()
    await model.prompt(text).text()
    return time.perf_counter() - started


async def batches(
    pairs: dict[str, tuple[Any, Any]], prompts: int, streams: int
) -> dict[str, dict[str, float]]:
    """For each named (echo, chunks) pair, interleaved prompt by prompt: the median
    seconds per prompt of a short batch and the median per chunk of a batch of
    streams, in the least disturbed batch (other load comes and goes, and only adds)."""
    for _ in range(100):  # warm-up
        for echo, chunks in pairs.values():
            await timed(echo, "hi")
            await timed(chunks, "1")
    per_prompt: dict[str, list[float]] = {name: [] for name in pairs}
    for _ in range(max(1, prompts // BATCH)):
        times: dict[str, list[float]] = {name: [] for name in pairs}
        for _ in range(BATCH):
            for name, (echo, _) in pairs.items():
                times[name].append(await timed(echo, "hi"))
        for name in pairs:
            per_prompt[name].append(statistics.median(times[name]))
    per_chunk: dict[str, list[float]] = {name: [] for name in pairs}
    for _ in range(max(1, streams // STREAM_BATCH)):
        one: dict[str, list[float]] = {name: [] for name in pairs}
        many: dict[str, list[float]] = {name: [] for name in pairs}
        for _ in range(STREAM_BATCH):
            for name, (_, chunks) in pairs.items():
                one[name].append(await timed(chunks, "1"))
                many[name].append(await timed(chunks, str(CHUNKS + 1)))
        for name in pairs:
            gap = statistics.median(many[name]) - statistics.median(one[name])
            per_chunk[name].append(gap / CHUNKS)
    # The least disturbed batch: the same one for every pair, so that a ratio compares
    # what was measured side by side.
    prompt_batch = least_disturbed(per_prompt)
    chunk_batch = least_disturbed(per_chunk)
    return {
        name: {"prompt_s": per_prompt[name][prompt_batch], "chunk_s": per_chunk[name][chunk_batch]}
        for name in pairs
    }


def least_disturbed(measured: dict[str, list[float]]) -> int:
    """The index of the batch whose times, all pairs together, are the least."""
    totals = [sum(batch) for batch in zip(*measured.values(), strict=True)]
    return totals.index(min(totals))


def per_prompt_child(prompts: int, streams: int, interleaved: bool) -> None:
    """In a child process: print seconds per prompt and per chunk as JSON.

    ``interleaved`` (the package loaded): llm's own echo class with its
    methods unwrapped, and a plain streaming model, against the same wrapped
    as the plugin wraps them, prompt by prompt in this one process.
    Otherwise the models of this process, as its ``LLM_LOAD_PLUGINS`` made them.
    """
    llm.get_async_models()  # plugins loaded, registered classes wrapped
    loaded = "llm-async-attachments" in os.environ.get("LLM_LOAD_PLUGINS", "")
    echo = llm.get_async_model("echo")
    if not loaded:  # llm alone: nothing of the package is imported or called
        print(
            json.dumps(asyncio.run(batches({"here": (echo, Chunks())}, prompts, streams))["here"])
        )
        return
    wrapped_chunks = laa.prepare_before_execute(type("WrappedChunks", (Chunks,), {}))()
    if not interleaved:
        pair = (echo, wrapped_chunks)
        print(json.dumps(asyncio.run(batches({"here": pair}, prompts, streams))["here"]))
        return
    wrapped: Any = type(echo)
    alone = type(
        "Alone",
        (wrapped,),
        {
            "execute": wrapped.execute.__wrapped__,
            "_validate_attachments": wrapped._validate_attachments.__wrapped__,
        },
    )
    pairs = {"llm alone": (alone(), Chunks()), "with llm-async-attachments": (echo, wrapped_chunks)}
    print(json.dumps(asyncio.run(batches(pairs, prompts, streams))))


def per_prompt(rounds: int, prompts: int, streams: int) -> dict[str, dict[str, dict[str, float]]]:
    """Seconds per prompt and per chunk for each variant, measured two ways (the least
    disturbed round of each): in separate processes, and interleaved in one."""
    results: dict[str, dict[str, dict[str, list[float]]]] = {
        way: {name: {"prompt_s": [], "chunk_s": []} for name in VARIANTS} for way in WAYS
    }
    command = [sys.executable, "-m", "benchmarks.overhead", "--child", "--prompts", str(prompts)]
    command += ["--streams", str(streams)]
    for _ in range(rounds):
        for name, plugins in VARIANTS.items():
            measured = json.loads(spawn(command, plugins))
            for key, value in measured.items():
                results[WAYS[0]][name][key].append(value)
        both = json.loads(
            spawn([*command, "--interleaved"], VARIANTS["with llm-async-attachments"])
        )
        for name, measured in both.items():
            for key, value in measured.items():
                results[WAYS[1]][name][key].append(value)
    return {
        way: {name: {k: min(v) for k, v in found.items()} for name, found in variants.items()}
        for way, variants in results.items()
    }


WAYS = (
    "separate processes (llm alone: the package not loaded)",
    "one process, interleaved (llm alone: the same classes unwrapped)",
)


def spawn(command: list[str], plugins: str) -> str:
    done = subprocess.run(
        command,
        env={**os.environ, "LLM_LOAD_PLUGINS": plugins, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def per_prompt_report(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = ["Per prompt and per streamed chunk, no attachments (medians of batches):"]
    for way, variants in results.items():
        alone, ours = variants["llm alone"], variants["with llm-async-attachments"]
        lines += [f"  {way}", f"    {'':28} {'llm alone':>10} {'with package':>13} {'ratio':>6}"]
        for key, name in (
            ("prompt_s", "per prompt (llm-echo)"),
            ("chunk_s", "per chunk (1,000 chunks)"),
        ):
            lines.append(
                f"    {name:28} {alone[key] * 1e6:>8.2f}us {ours[key] * 1e6:>11.2f}us "
                f"{ours[key] / alone[key]:>5.2f}x"
            )
    return "\n".join(lines)


async def overhead(urls: list[str]) -> tuple[float, float]:
    """Median seconds per attachment: this package, and a bare httpx2 GET."""
    echo = llm.get_async_model("echo")
    ours = []
    for url in urls:
        prompt = Prompt("x", echo, attachments=[llm.Attachment(url=url)])
        started = time.perf_counter()
        await laa.prepare_attachments(prompt)
        ours.append(time.perf_counter() - started)
    bare = []
    async with httpx2.AsyncClient() as client:
        await client.get(urls[0])
        for url in urls:
            started = time.perf_counter()
            (await client.get(url)).raise_for_status()
            bare.append(time.perf_counter() - started)
    return statistics.median(ours[10:]), statistics.median(bare[10:])


async def base64_stalls(url: str) -> dict[str, float]:
    """Largest stall while base64_content() runs 3 times (a 3-turn conversation)."""
    attachment: Any = llm.Attachment(url=url)
    prompt = Prompt("x", llm.get_async_model("echo"), attachments=[attachment])
    prepared = await measure(lambda: laa.prepare_attachments(prompt))
    llms_own: Any = getattr(llm.Attachment.base64_content, "__wrapped__")  # noqa: B009

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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="child processes per variant")
    parser.add_argument("--prompts", type=int, default=3000, help="per child, per prompt")
    parser.add_argument("--streams", type=int, default=200, help="per child, per chunk")
    parser.add_argument("--only-prompts", action="store_true", help="only per prompt/chunk")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--interleaved", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv if argv is not None else [])
    if args.child:
        per_prompt_child(args.prompts, args.streams, args.interleaved)
        return {}
    prompts = per_prompt(args.rounds, args.prompts, args.streams)
    print(per_prompt_report(prompts) + "\n", flush=True)
    if args.only_prompts:
        return {"per_prompt": prompts}
    llm.get_async_models()
    with SpawnedFileServer() as server:
        small = samples.sized("png", 1024)
        urls = [server.add(f"/o{i}.png", small, content_type="image/png") for i in range(ROUNDS)]
        big = server.add("/big.png", samples.sized("png", BIG), content_type="image/png")
        ours, bare = asyncio.run(overhead(urls))
        stalls = asyncio.run(base64_stalls(big))
    print(f"Per attachment (median of {ROUNDS - 10}, 1 KiB, loopback):")
    print(f"  bare httpx2 GET           {bare * 1e6:8.0f} us")
    print(f"  prepare_attachments()     {ours * 1e6:8.0f} us")
    print(f"  the package's overhead    {(ours - bare) * 1e6:8.0f} us\n")
    print(f"base64 of a {BIG >> 20} MiB attachment, largest event-loop stall:")
    for name, stall in stalls.items():
        print(f"  {name:44} {stall:7.1f} ms")
    return {"ours_s": ours, "bare_s": bare, "stalls": stalls, "per_prompt": prompts}


if __name__ == "__main__":
    main(sys.argv[1:])
