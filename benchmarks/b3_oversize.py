"""B3 oversize: a 1 GiB body and an endless one, against a 32 MiB cap.

Each approach runs in a fresh child process, so its peak RSS is its own: the
kernel's high-water mark (VmHWM), reset after imports and a warm-up fetch:
llm's unbounded ``content_bytes()`` against this package's capped prefetch.
The file server runs in its own process. llm is not run on the endless body:
it would read until the machine runs out of memory.

    .venv/bin/python -m benchmarks.b3_oversize
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GiB = 1024**3
MiB = 1024**2
CAP = 32 * MiB
APPROACHES = {"llm": "llm content_bytes()", "package": "llm-async-attachments, 32 MiB cap"}


def child(approach: str, url: str, warm_up_url: str) -> None:
    """Measure one approach; imports and a small fetch first, so only the body counts."""
    import asyncio

    import llm

    import llm_async_attachments as laa
    from tests.support.models import Carrier

    async def prepare(target: str) -> None:
        # A model that takes any type: llm-echo takes images only, and the package
        # refuses other types from the headers, never reading the body at all.
        prompt = llm.Prompt("x", Carrier(), attachments=[llm.Attachment(url=target)])
        await laa.prepare_attachments(prompt, config=laa.Config(max_bytes=CAP))

    async def package() -> tuple[str, float, int]:
        await prepare(warm_up_url)
        before = reset_peak()
        started = time.perf_counter()
        try:
            await prepare(url)
            outcome = "read"
        except laa.AttachmentTooLarge as error:
            outcome = f"refused: {type(error).__name__}"
        return outcome, time.perf_counter() - started, before

    if approach == "llm":
        llm.Attachment(url=warm_up_url).content_bytes()
        before = reset_peak()
        started = time.perf_counter()
        outcome = f"read {len(llm.Attachment(url=url).content_bytes()) >> 20} MiB"
        seconds = time.perf_counter() - started
    else:
        outcome, seconds, before = asyncio.run(package())
    print(json.dumps({"outcome": outcome, "seconds": seconds, "growth": status("VmHWM") - before}))


def status(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM) to now; return the RSS now."""
    Path("/proc/self/clear_refs").write_text("5")
    return status("VmRSS")


def run() -> list[dict]:
    from tests.support.spawned import SpawnedFileServer

    rows = []
    with SpawnedFileServer() as server:
        bodies = {
            "1 GiB, Content-Length declared": server.url(f"/big?size={GiB}"),
            "endless, chunked": server.url("/endless"),
        }
        for body, url in bodies.items():
            for approach, label in APPROACHES.items():
                if approach == "llm" and "endless" in body:
                    continue
                command = [sys.executable, "-m", "benchmarks.b3_oversize", "--child"]
                finished = subprocess.run(
                    [*command, approach, url, server.url("/big?size=1024")],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=300,
                )
                rows.append({"body": body, "approach": label, **json.loads(finished.stdout)})
    return rows


def report(rows: list[dict]) -> str:
    lines = [f"{'body':32} {'approach':36} {'outcome':40} {'time':>8} {'RSS growth':>11}"]
    for row in rows:
        growth = f"{max(0, row['growth']) / MiB:.0f} MiB"  # a page given back reads as -0
        lines.append(
            f"{row['body']:32} {row['approach']:36} {row['outcome']:40} "
            f"{row['seconds']:>6.2f} s {growth:>11}"
        )
    return "\n".join(lines)


def main() -> list[dict]:
    rows = run()
    print(report(rows))
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:5])
    else:
        main()
