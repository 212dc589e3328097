"""B6 long conversation: what each turn costs as the conversation grows, no attachments.

llm-echo's async model, one conversation of T turns (``conversation.prompt(text)``,
then ``await response.text()``), timed turn by turn. Each variant runs in
child processes, alternately, so that both see the same machine:

* **llm alone**: ``LLM_LOAD_PLUGINS=llm-echo``, so this package is not loaded;
* **with llm-async-attachments**: ``LLM_LOAD_PLUGINS=llm-echo,llm-async-attachments``.

and both in one child process, a conversation of each in lockstep, turn by
turn (llm alone being llm-echo's class with its methods unwrapped), so that
load from elsewhere on the machine falls on both alike.

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


async def conversations(models: list[Any], turns: int) -> list[list[float]]:
    """Seconds for each turn of a new conversation with each of ``models``, in lockstep:
    turn 1 of each (in turn, the order alternating), then turn 2 of each, and so on."""
    chats = [model.conversation() for model in models]
    times: list[list[float]] = [[] for _ in models]
    for turn in range(turns):
        order = range(len(chats)) if turn % 2 == 0 else reversed(range(len(chats)))
        for index in order:
            started = time.perf_counter()
            response = chats[index].prompt(f"turn {turn}")
            await response.text()
            times[index].append(time.perf_counter() - started)
    return times


def child(turns: int, count: int, interleaved: bool) -> None:
    """Run in a child process: print each conversation's turn times as JSON, per model;
    with the package, also the time its prepare step took in each turn.

    ``interleaved`` (the package loaded): llm-echo's class with its methods
    unwrapped (llm alone) and wrapped, a conversation of each in lockstep.
    """
    import llm

    llm.get_async_models()  # plugins loaded and classes wrapped before the clock starts
    echo = llm.get_async_model("echo")
    models = {"here": echo}
    preparing: list[float] = []
    if "llm_async_attachments.integration.hook" in sys.modules:
        hook: Any = sys.modules["llm_async_attachments.integration.hook"]
        prepare = hook.prepare_for

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await prepare(*args, **kwargs)
            finally:
                preparing.append(time.perf_counter() - started)

        hook.prepare_for = timed
        if interleaved:
            wrapped: Any = type(echo)
            unwrapped = {
                "execute": wrapped.execute.__wrapped__,
                "_validate_attachments": wrapped._validate_attachments.__wrapped__,
            }
            models = {ALONE: type("Alone", (wrapped,), unwrapped)(), OURS: echo}

    async def run() -> dict[str, list[list[float]]]:
        await conversations(list(models.values()), min(turns, 20))  # warm-up
        found: dict[str, list[list[float]]] = {name: [] for name in (*models, PREPARE)}
        for _ in range(count):
            preparing.clear()
            measured = await conversations(list(models.values()), turns)
            for name, times in zip(models, measured, strict=True):
                found[name].append(times)
            if preparing:
                found[PREPARE].append(list(preparing))
        return found

    print(json.dumps(asyncio.run(run())))


def spawn(plugins: str, turns: int, conversations: int, *extra: str) -> dict[str, Any]:
    env = {**os.environ, "LLM_LOAD_PLUGINS": plugins, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "benchmarks.b6_turns", "--child", "--turns", str(turns)]
    done = subprocess.run(
        [*command, "--conversations", str(conversations), *extra],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    runs: dict[str, Any] = json.loads(done.stdout)
    return runs


ALONE, OURS = "llm alone", "with llm-async-attachments"
SAME = " (one process)"
PREPARE = "the package's prepare step"


def run(turns: int, conversations: int, rounds: int) -> dict[str, list[float]]:
    """The median seconds of each turn (index 0 is turn 1): for each variant in its own
    process, for both interleaved in one, and for the package's prepare step."""
    names = (ALONE, OURS, ALONE + SAME, OURS + SAME, PREPARE)
    collected: dict[str, list[list[float]]] = {name: [] for name in names}
    for _ in range(rounds):
        for name, plugins in VARIANTS.items():
            runs = spawn(plugins, turns, conversations)
            collected[name] += runs["here"]
            collected[PREPARE] += runs[PREPARE]
        runs = spawn(VARIANTS[OURS], turns, conversations, "--interleaved")
        collected[ALONE + SAME] += runs[ALONE]
        collected[OURS + SAME] += runs[OURS]
        collected[PREPARE] += runs[PREPARE]
    return {
        name: [statistics.median(turn) for turn in zip(*runs, strict=True)]
        for name, runs in collected.items()
    }


def report(results: dict[str, list[float]]) -> str:
    turns = len(results[ALONE])
    edge = min(EDGE, max(1, turns // 4))
    points = sorted({1, 10, 100, turns} & set(range(1, turns + 1)))
    lines = [
        f"B6 long conversation: llm-echo, no attachments, {turns} turns "
        "(median per turn over the conversations run)",
    ]

    def growth(times: list[float]) -> str:
        first = statistics.median(times[:edge])
        last = statistics.median(times[-edge:])
        return f"{last / first:.1f}x" if first > 0 else "n/a"

    for way, suffix in (("separate processes", ""), ("one process, interleaved", SAME)):
        alone, ours = results[ALONE + suffix], results[OURS + suffix]
        added = [b - a for a, b in zip(alone, ours, strict=True)]
        lines += [
            "",
            f"{way}:",
            f"{'turn':>6} {'llm alone us':>13} {'with package us':>16} {'added us':>9} "
            f"{'ratio':>6}",
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
            f"growth, median of the last {edge} turns / of the first {edge}: "
            f"llm alone {growth(alone)}, "
            f"with package {growth(ours)}, the package's share {growth(added)}",
        ]
    preparing = results[PREPARE]
    first = statistics.median(preparing[:edge])
    last = statistics.median(preparing[-edge:])
    lines += [
        "",
        f"{PREPARE}, timed inside the process: first {edge} turns {first * 1e6:.1f} us, "
        f"last {edge} {last * 1e6:.1f} us ({last / first:.1f}x)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--conversations", type=int, default=2, help="per child process")
    parser.add_argument("--rounds", type=int, default=5, help="child processes per variant")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--interleaved", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.turns, args.conversations, args.interleaved)
        return {}
    results = run(args.turns, args.conversations, args.rounds)
    print(report(results), flush=True)
    return results


if __name__ == "__main__":
    main()
