"""make bench: every benchmark side by side, then docs/benchmarks.md and its plots.

    .venv/bin/python -m benchmarks            # about 20 minutes on 2 cores

Each section runs its benchmark module (they also run alone, see their
docstrings), keeps the table it prints, and the report adds the machine, the
plots (matplotlib, the ``bench`` extra) and how to reproduce.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks import (
    b1_openai,
    b2_disk_cost,
    b2_fanout,
    b3_oversize,
    b4_bridge,
    b5_files,
    b6_turns,
    b7_memory,
    b9_fleet,
    overhead,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
IMAGES = DOCS / "img"


class Tee(io.StringIO):
    """Keep what a benchmark prints, and show it as it runs."""

    def write(self, text: str) -> int:
        sys.__stdout__.write(text)
        sys.__stdout__.flush()
        return super().write(text)


def captured(run, *args):
    buffer = Tee()
    with contextlib.redirect_stdout(buffer):
        result = run(*args)
    return result, buffer.getvalue().strip()


def in_fresh_process(module: str) -> str:
    """What ``python -m module`` prints. For B8: a child's peak RSS, as the kernel
    reports it, includes its parent's at the fork, and this process has grown large."""
    done = subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, capture_output=True, text=True, check=True
    )
    sys.__stdout__.write(done.stdout)
    return done.stdout.strip()


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
        platform.processor(),
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    packages = ", ".join(
        f"{name} {version(name)}"
        for name in (
            "llm",
            "httpx2",
            "httpcore2",
            "httpx",
            "aiohttp",
            "pyleak",
            "llm-all-models-async",
        )
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}; {packages}"
    )


def plot_b1(results: dict) -> str:
    figure, axes = plt.subplots(figsize=(8, 3.2), dpi=100)
    for name, measured in results.items():
        times = [t for t, _ in measured["gaps"]]
        stalls = [gap for _, gap in measured["gaps"]]
        axes.plot(times, stalls, label=name, marker=".", markersize=3, linestyle="none")
    axes.set_xlabel("seconds since the conversation started")
    axes.set_ylabel("event-loop stall (ms)")
    axes.set_yscale("symlog", linthresh=10)
    axes.set_title("B1: llm's OpenAI model, 3 turns, PNG + WAV + PDF URLs")
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = IMAGES / "b1-stall.png"
    figure.savefig(path)
    plt.close(figure)
    return path.name


def plot_b2(results: dict) -> str:
    figure, axes = plt.subplots(figsize=(8, 3.2), dpi=100)
    ns = sorted(results)
    # A floor's "best" row names its winning setting, which differs between N: one series
    # per floor, keyed by the name before the setting.
    series: dict[str, list[tuple[int, float]]] = {}
    for n in ns:
        for name, row in results[n].items():
            series.setdefault(name.split(":")[0], []).append((n, row.wall_s))
    for name, points in sorted(series.items()):
        axes.plot(*zip(*points, strict=True), marker="o", label=name)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel(f"URL attachments ({b2_fanout.SIZE >> 10} KiB each, 50 ms latency)")
    axes.set_ylabel("wall time (s)")
    axes.set_title("B2: preparing N URL attachments")
    axes.legend(fontsize=7)
    figure.tight_layout()
    path = IMAGES / "b2-fanout.png"
    figure.savefig(path)
    plt.close(figure)
    return path.name


def plot_b7(results: dict) -> str:
    figure, axes = plt.subplots(figsize=(8, 3.2), dpi=100)
    for name, measured in results.items():
        series = measured["growth_by_turn_mib"]
        axes.plot(range(1, len(series) + 1), series, label=name)
    axes.set_xlabel("turn")
    axes.set_ylabel("resident set growth (MiB)")
    axes.legend()
    figure.tight_layout()
    path = IMAGES / "b7-memory.png"
    figure.savefig(path)
    plt.close(figure)
    return path.name


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    b1, b1_text = captured(b1_openai.main)
    b2, b2_text = captured(b2_fanout.main, [])
    _, b2_disk_text = captured(b2_disk_cost.main)
    _, b3_text = captured(b3_oversize.main)
    _, overhead_text = captured(overhead.main)
    _, b4_text = captured(b4_bridge.run, [])
    _, b5_text = captured(b5_files.main, [])
    _, b6_text = captured(b6_turns.main, [])
    b7, b7_text = captured(b7_memory.main, [])
    b8_text = in_fresh_process("benchmarks.b8_startup")
    _, b9_text = captured(b9_fleet.main, [])
    b1_plot, b2_plot, b7_plot = plot_b1(b1), plot_b2(b2), plot_b7(b7)
    template = (Path(__file__).parent / "report.md").read_text()
    page = template.format(
        machine=machine(),
        b1=b1_text,
        b1_plot=b1_plot,
        b2=b2_text,
        b2_plot=b2_plot,
        b2_disk=b2_disk_text,
        b3=b3_text,
        overhead=overhead_text,
        b4=b4_text,
        b5=b5_text,
        b6=b6_text,
        b7=b7_text,
        b7_plot=b7_plot,
        b8=b8_text,
        b9=b9_text,
    )
    (DOCS / "benchmarks.md").write_text(page)
    print(f"\nwrote {DOCS / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
