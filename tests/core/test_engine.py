"""The engine knows no llm: it prepares plain attachment-like objects, without importing it."""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from llm_async_attachments import AttachmentTooLarge, Config
from llm_async_attachments.core import prepare as engine
from llm_async_attachments.core.plan import Plan, UrlPolicy
from llm_async_attachments.store.memory import Lease
from llm_async_attachments.store.state import peek
from llm_async_attachments.testing import samples

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "llm_async_attachments"
LAYERS_WITHOUT_LLM = ("core", "store", "http")


@dataclass(eq=False)
class Plain:
    """What the engine needs of an attachment: four fields, and a weak reference to it."""

    type: str | None = None
    path: str | None = None
    url: str | None = None
    content: bytes | None = None


async def prepared(*attachments: Plain, urls: UrlPolicy | None = None, **config: object) -> int:
    plan = Plan(Config(**config), urls or UrlPolicy(False))  # type: ignore[arg-type]
    with Lease(0) as lease:
        placed = [(attachment, "prompt") for attachment in attachments]
        summary = await engine.prepare(placed, plan, lease, started=time.perf_counter())
    return summary.requests


async def test_plain_objects_are_prepared_from_files_and_urls(file_server, tmp_path):
    image = tmp_path / "image.png"
    image.write_bytes(samples.png())
    url = file_server.add("/doc.pdf", samples.pdf(), content_type="application/pdf")
    by_path, by_url = Plain(path=str(image)), Plain(url=url)

    requests = await prepared(by_path, by_url)

    assert requests == 1  # the GET that fetched the PDF said its type
    path_state, url_state = peek(by_path), peek(by_url)
    assert (path_state.type, path_state.content) == ("image/png", samples.png())
    assert path_state.id == hashlib.sha256(samples.png()).hexdigest()
    assert (url_state.type, url_state.content) == ("application/pdf", samples.pdf())


async def test_urls_the_plan_sends_on_are_typed_not_downloaded(file_server):
    url = file_server.add("/cat.png", samples.png(), content_type="image/png")
    attachment = Plain(url=url)

    await prepared(attachment, urls=UrlPolicy(True))

    assert file_server.requests == [("HEAD", "/cat.png")]
    assert peek(attachment).type == "image/png"


async def test_the_caps_hold_for_plain_objects(file_server):
    url = file_server.add("/big.png", samples.sized("png", 4096), content_type="image/png")

    with pytest.raises(AttachmentTooLarge, match=r"big\.png"):
        await prepared(Plain(url=url), max_bytes=1024)


def test_preparing_in_a_fresh_interpreter_never_imports_llm(tmp_path):
    image = tmp_path / "image.png"
    image.write_bytes(samples.png())
    code = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from llm_async_attachments.config import Config
        from llm_async_attachments.core import prepare as engine
        from llm_async_attachments.core.plan import Plan, UrlPolicy
        from llm_async_attachments.store.memory import Lease
        from llm_async_attachments.store.state import peek

        class Plain:
            type = url = content = None
            path = {str(image)!r}

        async def main():
            attachment = Plain()
            with Lease(0) as lease:
                plan = Plan(Config(), UrlPolicy(False))
                started = time.perf_counter()
                await engine.prepare([(attachment, "prompt")], plan, lease, started=started)
            assert peek(attachment).type == "image/png"

        asyncio.run(main())
        print(sorted(name for name in sys.modules if name == "llm" or name.startswith("llm.")))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("layer", LAYERS_WITHOUT_LLM)
def test_the_engine_store_and_http_layers_never_name_llm(layer):
    """Not even in an import inside a function: only ``integration`` (and the entry
    points above it) may import llm."""
    named = []
    for module in sorted((PACKAGE / layer).rglob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module_name = node.module or ""
                names = [module_name] if node.level == 0 else []
                if node.level >= 2 and module_name.split(".")[0] == "integration":
                    names = ["integration"]
            else:
                continue
            for name in names:
                if name == "llm" or name.startswith("llm.") or name == "integration":
                    named.append(f"{module.relative_to(ROOT)}:{node.lineno} {name}")
    assert named == []
