"""make demo: llm's own gpt-4o-mini, 3 turns, an image and a PDF URL attachment.

Starts two loopback servers in this process: a file server with 50 ms latency
and an OpenAI-compatible API. Runs the same conversation twice, each in a
child process: once with llm alone (LLM_LOAD_PLUGINS='' so no plugin loads)
and once with llm-async-attachments installed as the plugin it is. Prints
the file server's HTTP requests, the largest event-loop stall a 1 ms ticker
saw, the wall time, and whether the API received identical request bodies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llm_async_attachments.testing import samples  # noqa: E402
from llm_async_attachments.testing.server import FileServer  # noqa: E402
from tests.support.openai_server import OpenAIServer  # noqa: E402

SIZE = 2 * 1024 * 1024
LATENCY = 0.05


def run(image: str, pdf: str, env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.scenario", image, pdf],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        sys.exit(f"the scenario failed:\n{result.stderr}")
    return json.loads(result.stdout)


def main() -> None:
    rows = []
    with FileServer() as files, OpenAIServer() as api, tempfile.TemporaryDirectory() as home:
        image = files.add(
            "/photo.png", samples.sized("png", SIZE), content_type="image/png", latency=LATENCY
        )
        pdf = files.add(
            "/report.pdf",
            samples.sized("pdf", SIZE),
            content_type="application/pdf",
            latency=LATENCY,
        )
        env = {
            **os.environ,
            "OPENAI_BASE_URL": api.base_url,
            "OPENAI_API_KEY": "sk-demo",
            "LLM_USER_PATH": home,
        }
        bodies = []
        for label, extra in (
            ("llm alone", {"LLM_LOAD_PLUGINS": ""}),
            # Only this plugin: the test extra also installs plugins (such as
            # llm-openai-plugin, whose registration costs ~100 ms a model lookup)
            # that neither side should pay for.
            ("llm + llm-async-attachments", {"LLM_LOAD_PLUGINS": "llm-async-attachments"}),
        ):
            files.requests.clear()
            api.reset()
            measured = run(image, pdf, {**env, **extra})
            heads, gets = files.count("HEAD"), files.count("GET")
            bodies.append(list(api.bodies))
            rows.append(
                (
                    label,
                    f"{heads + gets} ({heads} HEAD, {gets} GET)",
                    measured["largest_stall_ms"],
                    measured["wall_s"],
                )
            )
    print(
        f"3-turn conversation with gpt-4o-mini (llm's own OpenAI plugin, loopback API),\n"
        f"a PNG and a PDF URL attachment of {SIZE >> 20} MiB each, {LATENCY * 1000:.0f} ms "
        "file-server latency.\n"
    )
    print(f"{'':29} {'file-server requests':>22} {'largest loop stall':>19} {'wall time':>10}")
    for label, requests, stall, wall in rows:
        print(f"{label:29} {requests:>22} {stall:>16.1f} ms {wall:>8.2f} s")
    same = bodies[0] == bodies[1]
    print(
        f"\nAPI request bodies identical in both runs: {'yes' if same else 'NO'} "
        f"({len(bodies[0])} requests each)"
    )
    print(
        f"Requests: {rows[0][1].split()[0]} -> {rows[1][1].split()[0]}; largest stall "
        f"{rows[0][2] / max(rows[1][2], 0.001):.0f}x smaller; wall time "
        f"{rows[0][3] / rows[1][3]:.1f}x shorter."
    )
    print(
        "The stall that remains with the package is not attachment I/O: llm's OpenAI plugin\n"
        "builds a new openai client, and so a new TLS context, on the event loop for every\n"
        "prompt (docs/benchmarks.md)."
    )
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
