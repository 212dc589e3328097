"""When llm changes under us, we stand down: one warning, and llm works as if we were absent.

Each test runs a copy of the installed llm in which one private name the
package relies on is renamed everywhere, as a future llm release might rename
it, then drives that llm in one fresh interpreter with every plugin loaded:
``llm models``, a sync ``llm prompt``, an async prompt with a path attachment,
and ``llm async-attachments status``, which says why; the interpreter's stderr
holds exactly one warning.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import llm
import pytest

from llm_async_attachments.testing import samples

ROOT = Path(__file__).resolve().parents[2]
LLM_SOURCE = Path(llm.__file__).parent

# Each private name llm_internals relies on, and the name a future llm might give it.
RENAMES = {
    "_validate_attachments": "_check_attachments",
    "_id": "_ident",
    "_done": "_finished",
    "_explicit_messages": "_given_messages",
    "_canonical_attachment": "_attachment_record",
}

USE_LLM = """
import asyncio, sys, llm
from click.testing import CliRunner
from llm.cli import cli
from llm_async_attachments.integration.install import standing_down

models = CliRunner().invoke(cli, ["models"])
assert models.exit_code == 0 and "echo" in models.output, models.output
prompted = CliRunner().invoke(cli, ["prompt", "-m", "echo", "hello", "--no-log"])
assert prompted.exit_code == 0 and "hello" in prompted.output, prompted.output
status = CliRunner().invoke(cli, ["async-attachments", "status"])
assert status.exit_code == 0, status.output
print("said" if status.output.startswith("Standing down: llm differs") else "silent")

async def main():
    model = llm.get_async_model("echo")
    image = llm.Attachment(path=sys.argv[1])
    text = await model.prompt("hi", attachments=[image]).text()
    assert "hi" in text, text
    print("patched" if getattr(llm.Attachment, "_llm_async_attachments_patched", False)
          else "unpatched", "standing down" if standing_down() else "installed")

asyncio.run(main())
"""


def simulated_llm(tmp_path: Path, private: str) -> Path:
    """A copy of the installed llm with ``private`` renamed in every module of it."""
    folder = tmp_path / "site"
    shutil.copytree(LLM_SOURCE, folder / "llm", ignore=shutil.ignore_patterns("__pycache__"))
    pattern = re.compile(rf"\b{re.escape(private)}\b")
    renamed = 0
    for module in (folder / "llm").rglob("*.py"):
        text = module.read_text(encoding="utf-8")
        changed, count = pattern.subn(RENAMES[private], text)
        if count:
            module.write_text(changed, encoding="utf-8")
            renamed += count
    if not renamed:
        pytest.skip(f"llm {llm_version()} has no {private}")
    return folder


def llm_version() -> str:
    from importlib.metadata import version

    return version("llm")


def run(site: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    env.pop("LLM_LOAD_PLUGINS", None)
    env.pop("LLM_ASYNC_ATTACHMENTS_GUARD", None)
    env["LLM_USER_PATH"] = str(tmp_path / "llm-user")
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, check=False, cwd=tmp_path
    )


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "standing down" in line]


@pytest.mark.parametrize("private", sorted(RENAMES))
def test_a_renamed_private_makes_us_stand_down_and_llm_keeps_working(tmp_path, private):
    site = simulated_llm(tmp_path, private)
    image = tmp_path / "image.png"
    image.write_bytes(samples.png())

    used = run(site, tmp_path, "-c", textwrap.dedent(USE_LLM), str(image))

    assert used.returncode == 0, used.stderr
    assert used.stdout.split() == ["said", "unpatched", "standing", "down"]
    (warning,) = warnings_in(used.stderr)
    assert "llm-async-attachments is standing down" in warning
    assert f"llm {llm_version()}" in warning
    assert private in warning


def test_the_installed_llm_is_what_we_expect(tmp_path):
    """The control: the same copy unchanged, and we install without a warning."""
    site = tmp_path / "site"
    shutil.copytree(LLM_SOURCE, site / "llm", ignore=shutil.ignore_patterns("__pycache__"))
    image = tmp_path / "image.png"
    image.write_bytes(samples.png())

    used = run(site, tmp_path, "-c", textwrap.dedent(USE_LLM), str(image))

    assert used.returncode == 0, used.stderr
    assert used.stdout.split() == ["silent", "patched", "installed"]
    assert warnings_in(used.stderr) == []
