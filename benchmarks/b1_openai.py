"""B1 real plugin: llm's own OpenAI async model, URL attachments, a 3-turn conversation.

A loopback OpenAI-compatible API and a file server (in its own process, 50 ms
latency) serve a PNG, a WAV and a PDF of 2 MiB each. The conversation runs in
a child process per variant, so each starts clean and the servers' threads do
not compete with it for the GIL:

* **llm alone**: ``LLM_LOAD_PLUGINS=''``, no plugin loads;
* **with llm-async-attachments**: the package loads as the llm plugin it is;
* **with llm-async-attachments, TLS context cached**: the same, with
  ``ssl.create_default_context`` memoised in the child, to show how much of
  the remaining stall is the openai client loading certificates per prompt.

The model is ``gpt-4o-audio-preview``'s class (``AsyncChat``, vision and audio
on), so all three attachments are accepted. Reported: requests the file
server saw, the largest event-loop stall (1 ms ticker) and wall time.

    .venv/bin/python -m benchmarks.b1_openai
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE = 2 * 1024 * 1024
LATENCY = 0.05
TURNS = 3
VARIANTS = {
    "llm alone": {"LLM_LOAD_PLUGINS": ""},
    "with llm-async-attachments": {},
    "with llm-async-attachments, TLS context cached": {"B1_CACHE_TLS": "1"},
}


async def conversation(urls: list[str]) -> list[tuple[float, float]]:
    """The 3 turns, beside a 1 ms ticker; returns (seconds since start, gap ms) samples."""
    import llm
    from llm.default_plugins.openai_models import AsyncChat

    model = AsyncChat("gpt-4o-audio-preview", vision=True, audio=True)
    gaps: list[tuple[float, float]] = []
    done = asyncio.Event()
    started = time.perf_counter()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append((now - started, (now - last - 0.001) * 1000))
            last = now

    async with asyncio.TaskGroup() as group:
        group.create_task(ticker())
        await asyncio.sleep(0.01)
        chat = model.conversation()
        attachments = [llm.Attachment(url=url) for url in urls]
        for turn in range(TURNS):
            response = chat.prompt(
                f"Turn {turn + 1}", attachments=attachments if not turn else None
            )
            await response.text()
        done.set()
    return gaps


def child(urls: list[str]) -> None:
    from tests.support.scenario import warm_up

    if os.environ.get("B1_CACHE_TLS"):
        ssl.create_default_context = functools.cache(ssl.create_default_context)
    warm_up()
    started = time.perf_counter()
    gaps = asyncio.run(conversation(urls))
    print(json.dumps({"gaps": gaps, "wall_s": time.perf_counter() - started}))


def run() -> dict[str, dict]:
    """Every variant, side by side; returns the measurements for the report."""
    from llm_async_attachments.testing import samples
    from tests.support.openai_server import OpenAIServer
    from tests.support.spawned import SpawnedFileServer

    results: dict[str, dict] = {}
    with SpawnedFileServer() as files, OpenAIServer() as api, tempfile.TemporaryDirectory() as home:
        urls = [
            files.add(
                f"/b1.{kind}", samples.sized(kind, SIZE), content_type=content_type, latency=LATENCY
            )
            for kind, content_type in (
                ("png", "image/png"),
                ("wav", "audio/wav"),
                ("pdf", "application/pdf"),
            )
        ]
        env = {
            **os.environ,
            "OPENAI_BASE_URL": api.base_url,
            "OPENAI_API_KEY": "sk-bench",
            "LLM_USER_PATH": home,
        }
        for name, extra in VARIANTS.items():
            files.clear_requests()
            api.reset()
            finished = subprocess.run(
                [sys.executable, "-m", "benchmarks.b1_openai", "--child", *urls],
                cwd=ROOT,
                env={**env, **extra},
                capture_output=True,
                text=True,
                check=True,
            )
            measured = json.loads(finished.stdout)
            measured["heads"] = files.count("HEAD")
            measured["gets"] = files.count("GET")
            measured["bodies"] = list(api.bodies)
            results[name] = measured
    return results


def report(results: dict[str, dict]) -> str:
    alone = results["llm alone"]
    lines = [
        f"{TURNS}-turn conversation, gpt-4o-audio-preview's AsyncChat, PNG + WAV + PDF URL "
        f"attachments ({SIZE >> 20} MiB each, {LATENCY * 1000:.0f} ms latency)",
        "",
        f"{'':48} {'requests':>16} {'largest stall':>14} {'wall':>8}",
    ]
    for name, measured in results.items():
        stall = max(gap for _, gap in measured["gaps"])
        requests = (
            f"{measured['heads'] + measured['gets']} ({measured['heads']}H {measured['gets']}G)"
        )
        lines.append(f"{name:48} {requests:>16} {stall:>11.1f} ms {measured['wall_s']:>6.2f} s")
    ours = results["with llm-async-attachments"]
    stall_alone = max(gap for _, gap in alone["gaps"])
    stall_ours = max(gap for _, gap in ours["gaps"])
    lines += [
        "",
        f"requests {alone['heads'] + alone['gets']} -> {ours['heads'] + ours['gets']}; "
        f"largest stall {stall_alone / stall_ours:.0f}x smaller; wall "
        f"{alone['wall_s'] / ours['wall_s']:.1f}x shorter; API request bodies identical: "
        f"{'yes' if all(r['bodies'] == alone['bodies'] for r in results.values()) else 'NO'}",
    ]
    return "\n".join(lines)


def main() -> dict[str, dict]:
    results = run()
    print(report(results))
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
