"""B6 long conversation: what each turn costs as the conversation grows, no attachments.

llm-echo's async model, one conversation of T turns (``conversation.prompt(text)``,
then ``await response.text()``), timed turn by turn. Each variant runs in
child processes, alternately, so that both see the same machine:

* **llm alone**: ``LLM_LOAD_PLUGINS=llm-echo``, so this package is not loaded;
* **with llm-async-attachments**: ``LLM_LOAD_PLUGINS=llm-echo,llm-async-attachments``.

Every turn's time is the median over the conversations run (``--conversations``
per child, ``--rounds`` children per variant). llm alone's own turn grows with
the conversation (echo lists every earlier prompt, and llm >= 0.36 copies the
whole message chain into each prompt); the package's share of a turn is the
difference between the two. Reported at a few turns, and for the whole
conversation.

    python -m benchmarks.b6_turns --turns 300
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "llm alone": "llm-echo",
    "with llm-async-attachments": "llm-echo,llm-async-attachments",
}
# Turns at the start and end of a conversation that the growth figures average over.
EDGE = 10


async def one_conversation(turns: int) -> list[float]:
    """Seconds for each turn of one new conversation with llm-echo's async model."""
    import llm

    model = llm.get_async_model("echo")
    conversation = model.conversation()
    times = []
    for turn in range(turns):
        started = time.perf_counter()
        response = conversation.prompt(f"turn {turn}")
        await response.text()
        times.append(time.perf_counter() - started)
    return times


def child(turns: int, conversations: int) -> None:
    """Run in a child process: print every conversation's turn times as JSON."""
    import llm

    llm.get_async_models()  # plugins loaded and classes wrapped before the clock starts

    async def run() -> list[list[float]]:
        await one_conversation(min(turns, 20))  # warm-up: first-call costs of both
        return [await one_conversation(turns) for _ in range(conversations)]

    print(json.dumps(asyncio.run(run())))


def spawn(plugins: str, turns: int, conversations: int) -> list[list[float]]:
    env = {**os.environ, "LLM_LOAD_PLUGINS": plugins, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "benchmarks.b6_turns", "--child", "--turns", str(turns)]
    done = subprocess.run(
        [*command, "--conversations", str(conversations)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    runs: list[list[float]] = json.loads(done.stdout)
    return runs


def run(turns: int, conversations: int, rounds: int) -> dict[str, list[float]]:
    """For each variant, the median seconds of each turn (index 0 is turn 1)."""
    collected: dict[str, list[list[float]]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, plugins in VARIANTS.items():
            collected[name] += spawn(plugins, turns, conversations)
    return {
        name: [statistics.median(turn) for turn in zip(*runs, strict=True)]
        for name, runs in collected.items()
    }


def report(results: dict[str, list[float]]) -> str:
    alone, ours = results["llm alone"], results["with llm-async-attachments"]
    turns = len(alone)
    added = [b - a for a, b in zip(alone, ours, strict=True)]
    points = sorted({1, 10, 100, turns} & set(range(1, turns + 1)))
    lines = [
        f"B6 long conversation: llm-echo, no attachments, {turns} turns "
        "(median per turn over the conversations run)",
        "",
        f"{'turn':>6} {'llm alone us':>13} {'with package us':>16} {'added us':>9} {'ratio':>6}",
    ]
    for turn in points:
        a, b = alone[turn - 1], ours[turn - 1]
        lines.append(
            f"{turn:>6} {a * 1e6:>13.1f} {b * 1e6:>16.1f} {(b - a) * 1e6:>9.1f} {b / a:>5.2f}x"
        )
    total_alone, total_ours = sum(alone), sum(ours)
    lines += [
        f"{'all':>6} {total_alone * 1e3:>11.2f}ms {total_ours * 1e3:>14.2f}ms "
        f"{(total_ours - total_alone) * 1e3:>7.2f}ms {total_ours / total_alone:>5.2f}x",
        "",
    ]
    edge = min(EDGE, max(1, turns // 4))

    def growth(times: list[float]) -> str:
        first = statistics.mean(times[:edge])
        last = statistics.mean(times[-edge:])
        return f"{last / first:.1f}x" if first > 0 else "n/a"

    lines.append(
        f"growth, last {edge} turns / first {edge}: llm alone {growth(alone)}, "
        f"with package {growth(ours)}, the package's share {growth(added)}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--conversations", type=int, default=3, help="per child process")
    parser.add_argument("--rounds", type=int, default=2, help="child processes per variant")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.turns, args.conversations)
        return {}
    results = run(args.turns, args.conversations, args.rounds)
    print(report(results), flush=True)
    return results


if __name__ == "__main__":
    main()
