"""Importing the package changes nothing; llm loading its plugins, or install(), patches llm.

Each check runs in a fresh interpreter: this test process has long been patched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import llm

import llm_async_attachments as laa
from llm_async_attachments.testing import samples

ROOT = Path(__file__).resolve().parents[2]

PATCHED = """
import llm
patched = getattr(llm.Attachment, "_llm_async_attachments_patched", False)
print("patched" if patched else "unpatched", hasattr(llm.Attachment, "to_async"))
"""


def run(code: str, *, load_plugins: bool = True) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LLM_LOAD_PLUGINS", None)
    if not load_plugins:
        env["LLM_LOAD_PLUGINS"] = ""  # llm then loads no plugin of any package
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + PATCHED],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_importing_the_package_leaves_llm_unpatched():
    code = """
    import sys
    import llm_async_attachments
    assert "llm" not in sys.modules  # the public names load on first use
    from llm_async_attachments import Config, configure, prepare_attachments, to_async
    """
    assert run(code) == "unpatched False"


def test_loading_llms_plugins_installs_the_guard():
    code = """
    import llm
    llm.load_plugins()  # what llm.get_model(), get_async_model() and the CLI do first
    assert "llm-async-attachments" in {p["name"] for p in llm.get_plugins()}
    """
    assert run(code) == "patched True"


def test_install_is_explicit_and_idempotent():
    code = """
    import llm
    original = llm.Attachment.content_bytes
    import llm_async_attachments as laa
    laa.install()
    laa.install()
    assert llm.Attachment.content_bytes.__wrapped__ is original  # wrapped once
    llm.load_plugins()
    assert llm.get_plugins() == []  # llm loaded no plugin: the call did it
    """
    assert run(code, load_plugins=False) == "patched True"


def test_prepare_attachments_installs_it_for_code_that_never_loads_plugins(tmp_path):
    path = tmp_path / "cat.png"
    path.write_bytes(samples.png())
    code = f"""
    import asyncio, os
    import llm
    import llm_async_attachments as laa

    class HandMade(llm.AsyncModel):
        model_id = "hand-made"
        attachment_types = {{"image/png"}}

        async def execute(self, prompt, stream, response, conversation=None):
            yield ""

    attachment = llm.Attachment(path={str(path)!r})

    async def main():
        await laa.prepare_attachments(llm.Prompt("x", HandMade(), attachments=[attachment]))
        os.remove(attachment.path)
        return attachment.content_bytes()  # on the loop, from the cache: no read

    assert asyncio.run(main()) == {samples.png()!r}
    """
    assert run(code, load_plugins=False) == "patched True"


def test_this_suite_runs_with_the_guard_installed():
    """conftest's warm-up loads llm's plugins, which installs it, as in any app."""
    assert getattr(llm.Attachment, "_llm_async_attachments_patched", False)
    assert llm.Attachment(content=b"x").to_async() == laa.to_async(llm.Attachment(content=b"x"))


def test_the_public_names_are_the_lazy_ones():
    assert sorted(laa._HOME) == sorted(laa.__all__)
    assert all(getattr(laa, name) is not None for name in laa.__all__)
    assert set(laa.__all__) <= set(dir(laa))
