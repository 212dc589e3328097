"""The hostile-input catalogue, measured: writes docs/hostile-inputs.md.

Runs every scenario of tests/support/hostile.py once against loopback servers
in this process and records what it raised, how long it took to fail, and the
peak memory it allocated (tracemalloc). The tests assert the same scenarios.

    .venv/bin/python -m benchmarks.hostile
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import llm

import llm_async_attachments as laa
from tests.support.hostile import BASE, SCENARIOS, Context, run
from tests.support.hostile_server import HostileFileServer

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "hostile-inputs.md"
KNOWN_LIMIT = [
    "A known limit, on puremagic 2 (what pip picks on Python 3.12 and newer): a file typed",
    "with its path, as llm types it, is opened again by puremagic's deep scans, which read",
    "what the file has become (some of them all of it). A file that grows after it was read,",
    "as in the last row, can then take more memory than the cap allows, in puremagic, on the",
    "worker thread; the content itself stays within the cap. puremagic 1.x reads a file's ends",
    "only, and the test holds it to the bound.",
]


async def measure_all(ctx: Context) -> list[tuple[str, str, float, int]]:
    rows = []
    for scenario in SCENARIOS:
        ctx.server.reset()
        ctx.server6.reset()
        outcome = await run(scenario, ctx)
        result = type(outcome.error).__name__ if outcome.error else "prepared"
        rows.append((scenario.name, result, outcome.seconds, outcome.peak_bytes))
    return rows


def main() -> None:
    llm.get_async_models()
    laa.configure(BASE)
    with (
        HostileFileServer() as server,
        HostileFileServer("::1") as server6,
        tempfile.TemporaryDirectory() as folder,
    ):
        rows = asyncio.run(measure_all(Context(server, server6, Path(folder))))
    lines = [
        "# Hostile inputs",
        "",
        "Every way an attachment URL, server or file can misbehave that this project tests,",
        "with what it raises, how long it takes to fail, and the peak memory allocated",
        "meanwhile. Limits for the run: 1 MiB per attachment, 1 s idle timeout, 3 s deadline,",
        "no retries unless the scenario says so. `tests/http/test_hostile.py` asserts each row",
        "(typed error and message, memory under the cap plus 3 MiB, no connection or file",
        "left open, no task or thread leaked); `python -m benchmarks.hostile` regenerates",
        "this page.",
        "",
        "| scenario | result | time | peak memory |",
        "|---|---|---|---|",
    ]
    for name, result, seconds, peak in rows:
        lines.append(f"| {name} | `{result}` | {seconds:.3f} s | {peak / 1024:.0f} KiB |")
    lines += ["", *KNOWN_LIMIT]
    OUTPUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
