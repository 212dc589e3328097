"""The HTTP layer runs on httpx2 and httpcore2 alone: a fetch imports neither httpx nor httpcore."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from llm_async_attachments.testing import samples

ROOT = Path(__file__).resolve().parents[2]

FETCH = """
import asyncio, json, sys, time
from llm_async_attachments.config import Config
from llm_async_attachments.core import prepare as engine
from llm_async_attachments.core.plan import Plan, UrlPolicy
from llm_async_attachments.store.memory import Lease
from llm_async_attachments.store.state import peek

class Plain:
    type = path = content = None
    url = sys.argv[1]

async def main():
    attachment = Plain()
    with Lease(0) as lease:
        plan = Plan(Config(), UrlPolicy(False))
        await engine.prepare([(attachment, "prompt")], plan, lease, started=time.perf_counter())
    return peek(attachment).type

kind = asyncio.run(main())
loaded = sorted({name.split(".")[0] for name in sys.modules} & {"httpx", "httpcore", "httpx2"})
print(json.dumps([kind, loaded]))
"""


def test_a_fetch_imports_neither_httpx_nor_httpcore(file_server):
    url = file_server.add("/cat.png", samples.png(), content_type="image/png")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FETCH), url],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["image/png", ["httpx2"]]
    assert file_server.requests == [("GET", "/cat.png")]
