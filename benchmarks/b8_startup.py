"""B8 start-up: what the plugin adds to every ``llm`` command, and the first prepare's stall.

1. Start-up: ``llm --version``, ``llm plugins`` and ``python -c "import llm;
   load_plugins()"``, each run many times in fresh processes, alternately
   with and without the package: ``LLM_LOAD_PLUGINS`` names every installed
   llm plugin, with or without ``llm-async-attachments``. Median wall time
   and peak RSS of the child; then ``load_plugins()`` alone, timed inside
   the child (no interpreter start-up or ``import llm`` in it: less noise).
2. The first prepare: a fresh process loads llm's plugins, starts an event
   loop with a 1 ms ticker and prepares one URL attachment (a small PNG from
   a file server in its own process). The package imports its HTTP layer
   then, on a worker thread; the largest stall the ticker sees is what that
   costs the loop. Beside it: the same with the HTTP layer imported on the
   loop, in the timed region (what a lazy import done naively would cost),
   and imported before the loop starts (no import at all while it runs: the
   floor). Median over fresh processes.

    python -m benchmarks.b8_startup --runs 20
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OURS = "llm-async-attachments"
LOAD = "import llm; from llm.plugins import load_plugins; load_plugins()"
STALL_MODES = {
    "HTTP layer imported on a worker thread (the package)": "thread",
    "HTTP layer imported on the loop": "loop",
    "HTTP layer imported before the loop (floor)": "before",
}


def plugins(with_ours: bool) -> str:
    """Every installed distribution with an llm entry point, with or without this one."""
    names = {
        dist.metadata["Name"]
        for dist in metadata.distributions()
        if any(ep.group == "llm" for ep in dist.entry_points)
    }
    if not with_ours:
        names.discard(OURS)
    return ",".join(sorted(names))


def commands() -> dict[str, list[str]]:
    script = Path(sys.executable).with_name("llm")
    llm = [str(script)] if script.exists() else [sys.executable, "-m", "llm"]
    return {
        "llm --version": [*llm, "--version"],
        "llm plugins": [*llm, "plugins"],
        "python: import llm, load plugins": [sys.executable, "-c", LOAD],
    }


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one run of ``command``."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode() if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    if process.returncode:
        raise RuntimeError(f"{command} failed: {stderr}")
    return wall, usage.ru_maxrss / 1024


# llm's own default plugins (openai's client: hundreds of ms) are imported before the
# clock starts: they load the same with or without the package, and are most of the noise.
TIME_LOAD = (
    "import llm, time; from llm.plugins import DEFAULT_PLUGINS, load_plugins; "
    "import importlib; [importlib.import_module(name) for name in DEFAULT_PLUGINS]; "
    "started = time.perf_counter(); load_plugins(); print(time.perf_counter() - started)"
)


def environment(with_ours: bool) -> dict[str, str]:
    """The child's environment: the plugins to load, this checkout first on the path.

    Bytecode is cached as for any installed package (a first run writes it),
    whatever this process was told: compiling every module of the package on
    every start would be measured otherwise.
    """
    env = {**os.environ, "LLM_LOAD_PLUGINS": plugins(with_ours), "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def plugin_load(runs: int) -> dict[str, float]:
    """Median seconds of ``load_plugins()`` alone (llm imported first), loading this
    plugin alone or none: the other plugins' ~400 ms would bury its share in noise."""
    found: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(runs + 1):
        for with_ours in (False, True):
            env = {**environment(with_ours), "LLM_LOAD_PLUGINS": OURS if with_ours else ""}
            done = subprocess.run(
                [sys.executable, "-c", TIME_LOAD],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            found["with" if with_ours else "without"].append(float(done.stdout))
    # The first round wrote the bytecode.
    return {name: statistics.median(seconds[1:]) for name, seconds in found.items()}


def startup(runs: int) -> dict[str, dict[str, tuple[float, float]]]:
    """For each command, with and without the package: median seconds, median MiB."""
    envs = {with_ours: environment(with_ours) for with_ours in (False, True)}
    results: dict[str, dict[str, tuple[float, float]]] = {}
    for name, command in commands().items():
        samples: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for with_ours in (False, True):
            timed(command, envs[with_ours])  # warm the file cache
        for _ in range(runs):
            for with_ours in (False, True):
                samples[with_ours].append(timed(command, envs[with_ours]))
        results[name] = {
            ("with" if with_ours else "without"): (
                statistics.median(wall for wall, _ in measured),
                statistics.median(rss for _, rss in measured),
            )
            for with_ours, measured in samples.items()
        }
    return results


def stall_child(url: str, mode: str) -> None:
    """In a fresh process: print the largest stall of the first prepare, in ms."""
    import llm

    import llm_async_attachments as laa
    from tests.support.stall import measure

    llm.get_async_models()
    if mode == "before":
        importlib.import_module("llm_async_attachments.http")

    # Looked up before the clock starts: llm runs every plugin's register_models() on
    # each lookup (llm-openai-plugin's alone takes ~80 ms), with or without the package.
    model = llm.get_async_model("echo")

    async def first_prepare() -> None:
        if mode == "loop":
            importlib.import_module("llm_async_attachments.http")
        make: Any = llm.Prompt  # untyped in llm
        prompt = make("x", model, attachments=[llm.Attachment(url=url)])
        await laa.prepare_attachments(prompt)

    measured = asyncio.run(measure(first_prepare))
    print(json.dumps({"stall_ms": measured.largest_stall_ms, "wall_s": measured.wall_s}))


def stalls(runs: int) -> dict[str, tuple[float, float]]:
    """For each way of importing: median largest stall (ms) and wall time (s)."""
    from llm_async_attachments.testing import samples
    from tests.support.spawned import SpawnedFileServer

    env = environment(True)
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in STALL_MODES}
    with SpawnedFileServer() as server:
        url = server.add("/cat.png", samples.png(), content_type="image/png")
        for _ in range(runs):
            for name, mode in STALL_MODES.items():
                done = subprocess.run(
                    [sys.executable, "-m", "benchmarks.b8_startup", "--stall-child", url, mode],
                    env=env,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                measured = json.loads(done.stdout)
                found[name].append((measured["stall_ms"], measured["wall_s"]))
    return {
        name: (
            statistics.median(stall for stall, _ in measured),
            statistics.median(wall for _, wall in measured),
        )
        for name, measured in found.items()
    }


def report(
    started: dict[str, dict[str, tuple[float, float]]],
    loading: dict[str, float],
    first: dict[str, tuple[float, float]],
) -> str:
    lines = [
        "B8 start-up: median of fresh processes, with and without the package "
        "(LLM_LOAD_PLUGINS: every installed llm plugin)",
        "",
        f"{'command':34} {'without ms':>11} {'with ms':>9} {'added ms':>9} "
        f"{'without MiB':>12} {'with MiB':>9} {'added MiB':>10}",
    ]
    for name, rows in started.items():
        (wall_a, rss_a), (wall_b, rss_b) = rows["without"], rows["with"]
        lines.append(
            f"{name:34} {wall_a * 1e3:>11.1f} {wall_b * 1e3:>9.1f} {(wall_b - wall_a) * 1e3:>9.1f} "
            f"{rss_a:>12.1f} {rss_b:>9.1f} {rss_b - rss_a:>10.1f}"
        )
    without, with_ours = loading["without"], loading["with"]
    lines += [
        "",
        "load_plugins(), llm imported, timed inside the process; no plugin, or this one alone:",
        f"{'':34} {without * 1e3:>11.1f} "
        f"{with_ours * 1e3:>9.1f} {(with_ours - without) * 1e3:>9.1f}",
        "",
        f"First prepare of a URL attachment in a fresh process (switch interval "
        f"{sys.getswitchinterval() * 1e3:.0f} ms):",
        f"  {'':56} {'largest stall ms':>17} {'wall ms':>8}",
    ]
    for name, (stall, wall) in first.items():
        lines.append(f"  {name:56} {stall:>17.1f} {wall * 1e3:>8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="fresh processes per command")
    parser.add_argument("--stall-runs", type=int, default=7, help="fresh processes per mode")
    parser.add_argument("--stall-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stall_child:
        stall_child(*args.stall_child)
        return {}
    started = startup(args.runs)
    loading = plugin_load(args.runs)
    first = stalls(args.stall_runs)
    print(report(started, loading, first), flush=True)
    return {"startup": started, "load_plugins": loading, "first_prepare": first}


if __name__ == "__main__":
    main()
