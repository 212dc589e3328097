"""B7 memory: resident memory over a long conversation, a new URL attachment every turn.

One conversation of T turns, each adding a new 2 MiB URL (``tests/support/long_chat.py``,
each variant in a child process of its own, its resident set read after every turn):

* **llm alone**: a model that reads each prompt's own attachment (as many plugins do),
  without this package: llm downloads the body, blocking, every time it is read;
* **no budget**: the same model with this package and ``cache_bytes`` far above what the
  conversation needs, so every body stays in memory (what the package did before the
  budget);
* **64 MiB budget**: the same, ``LLM_ASYNC_ATTACHMENTS_CACHE_BYTES=64MiB``;
* **llm-echo, 64 MiB budget**: llm-echo's async model, which reads no content at all.

Reported: the growth of the resident set over the conversation (its largest, after any
turn, less the resident set before the first turn) and the requests the server saw.

    python -m benchmarks.b7_memory --turns 200
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VARIANTS: dict[str, tuple[list[str], dict[str, str]]] = {
    "llm alone": (["--model", "current", "--alone"], {"LLM_LOAD_PLUGINS": ""}),
    "no budget": (["--model", "current"], {"LLM_ASYNC_ATTACHMENTS_CACHE_BYTES": "64GiB"}),
    "64 MiB budget": (["--model", "current"], {"LLM_ASYNC_ATTACHMENTS_CACHE_BYTES": "64MiB"}),
    "llm-echo, 64 MiB budget": (
        ["--model", "echo"],
        {"LLM_ASYNC_ATTACHMENTS_CACHE_BYTES": "64MiB"},
    ),
}


def run(name: str, turns: int, size: str, disk: str) -> dict[str, Any]:
    arguments, environment = VARIANTS[name]
    command = [sys.executable, "-m", "tests.support.long_chat", "--turns", str(turns)]
    result = subprocess.run(
        [*command, "--size", size, *arguments],
        cwd=ROOT,
        env={**os.environ, "LLM_ASYNC_ATTACHMENTS_DISK_CACHE_DIR": disk, **environment},
        capture_output=True,
        text=True,
        check=True,
    )
    measured: dict[str, Any] = json.loads(result.stdout)
    return measured


def report(results: dict[str, dict[str, Any]], turns: int, size: str) -> str:
    lines = [
        f"{turns} turns, a new {size} URL each turn; resident set growth (MiB), "
        "largest after any turn:",
        "",
        "| variant | RSS growth | RSS after | requests |",
        "|---|---|---|---|",
    ]
    for name, measured in results.items():
        lines.append(
            f"| {name} | {measured['rss_growth_mib']:.1f} MiB | "
            f"{measured['rss_after_mib']:.1f} MiB | {measured['requests']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--size", default="2MiB")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as disk:
        for name in VARIANTS:
            results[name] = run(name, args.turns, args.size, disk)
    print(report(results, args.turns, args.size))
    return results


if __name__ == "__main__":
    main()
