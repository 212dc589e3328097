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
conversation; and, measured inside the package's process (so without the noise
of comparing two processes), the time its prepare step takes in the first and
the last turns.

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
from typing import Any

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
    """Run in a child process: print each conversation's turn times (and, with the
    package, the time its prepare step took in each turn) as JSON."""
    import llm

    llm.get_async_models()  # plugins loaded and classes wrapped before the clock starts
    preparing: list[float] = []
    if "llm_async_attachments.hook" in sys.modules:
        hook = sys.modules["llm_async_attachments.hook"]
        prepare = hook.prepare_attachments

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await prepare(*args, **kwargs)
            finally:
                preparing.append(time.perf_counter() - started)

        hook.prepare_attachments = timed

    async def run() -> dict[str, list[list[float]]]:
        await one_conversation(min(turns, 20))  # warm-up: first-call costs
        found: dict[str, list[list[float]]] = {"turns": [], "prepare": []}
        for _ in range(conversations):
            preparing.clear()
            found["turns"].append(await one_conversation(turns))
            found["prepare"].append(list(preparing))
        return found

    print(json.dumps(asyncio.run(run())))


def spawn(plugins: str, turns: int, conversations: int) -> dict[str, list[list[float]]]:
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
    runs: dict[str, list[list[float]]] = json.loads(done.stdout)
    return runs


PREPARE = "the package's prepare step"


def run(turns: int, conversations: int, rounds: int) -> dict[str, list[float]]:
    """For each variant, the median seconds of each turn (index 0 is turn 1); and the
    median seconds of the package's prepare step in each turn."""
    collected: dict[str, list[list[float]]] = {name: [] for name in (*VARIANTS, PREPARE)}
    for _ in range(rounds):
        for name, plugins in VARIANTS.items():
            runs = spawn(plugins, turns, conversations)
            collected[name] += runs["turns"]
            if any(runs["prepare"]):
                collected[PREPARE] += runs["prepare"]
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
    preparing = results.get(PREPARE)
    if preparing:
        first = statistics.mean(preparing[:edge])
        last = statistics.mean(preparing[-edge:])
        lines.append(
            f"{PREPARE} (timed in the process, no second process to compare with): "
            f"first {edge} turns {first * 1e6:.1f} us, last {edge} {last * 1e6:.1f} us "
            f"({last / first:.1f}x)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--conversations", type=int, default=2, help="per child process")
    parser.add_argument("--rounds", type=int, default=5, help="child processes per variant")
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
