"""The plugin-author kit as a plugin author gets it: docs/plugin-authors.md, line by line.

A fresh virtualenv, a wheel of this checkout, the CI snippet's commands and the
test module the page shows, in a new plugin project. It installs from the
package registry, so it is marked ``pypi``: ``pytest -m "not pypi"`` offline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "plugin-authors.md"

PLUGIN_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "llm-my-plugin"
version = "0.1"
dependencies = ["llm"]

[project.entry-points.llm]
my_plugin = "llm_my_plugin"
"""


def documented() -> tuple[list[str], str]:
    """The CI snippet's ``run:`` commands and the complete test module, from the page."""
    page = PAGE.read_text()
    yaml = re.search(r"```yaml\n(.*?)```", page, re.S)
    module = re.search(r"`tests/test_never_blocks.py`:\n\n```python\n(.*?)```", page, re.S)
    assert yaml and module, "docs/plugin-authors.md lost its CI snippet or test module"
    commands = [
        line.removeprefix("- run: ")
        for line in yaml.group(1).splitlines()
        if line.startswith("- run: ")
    ]
    return commands, module.group(1)


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_snippet_installs_the_kit_with_its_extra():
    commands, _ = documented()
    assert commands[-1] == "pytest"
    assert re.search(r"'\S+\.whl\[testing\]'", commands[0])


@pytest.mark.pypi
def test_the_documented_ci_snippet_passes_in_a_fresh_virtualenv(tmp_path):
    commands, module = documented()
    [wheel_path] = re.findall(r"'(\S+\.whl)\[testing\]'", " ".join(commands))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "LLM_", "PYTEST"))
    }

    # A wheel of this checkout, built from a copy (the build writes into its source tree).
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", "site", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", "dist", "."], source, env)
    [built] = (source / "dist").glob("*.whl")
    assert built.name == Path(wheel_path).name, "the page names another version"

    # The plugin author's repository: their plugin, the vendored wheel, the page's tests.
    project = tmp_path / "llm-my-plugin"
    (project / "tests").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (project / "llm_my_plugin.py").write_text('"""The plugin under test."""\n')
    (project / "tests" / "test_never_blocks.py").write_text(module)
    (project / wheel_path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(built, project / wheel_path)

    # actions/setup-python: a fresh virtualenv first on PATH.
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    env["PATH"] = f"{environment / 'bin'}{os.pathsep}{env['PATH']}"
    env["LLM_USER_PATH"] = str(tmp_path / "llm-user")
    output = ""
    for command in commands:
        output = run(["bash", "-c", command], project, env)
    assert re.search(r"\b2 passed\b", output), output


def test_a_missing_kit_dependency_names_the_extra_and_spares_the_rest(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # this checkout's plugin, in the child
    pytester.makeconftest(
        """
        import sys

        sys.modules["pyleak"] = None  # as if installed without the testing extra
        """
    )
    pytester.makepyfile(
        test_my_plugin=textwrap.dedent(
            """
            import llm

            class MyModel(llm.AsyncModel):
                model_id = "my-model"
                attachment_types = {"image/png"}

                async def execute(self, prompt, stream, response, conversation=None):
                    yield "ok"

            async def test_never_blocks(check_async_model):
                await check_async_model(MyModel())

            def test_the_server_needs_no_extra(attachment_server):
                assert attachment_server.url("png").startswith("http://127.0.0.1:")
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "asyncio", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=1, errors=1)
    # The error pytest shows for the test (a line "E ..."), not a traceback line; the
    # short summary may repeat it, depending on the pytest-asyncio version.
    [line] = [line for line in result.outlines if "need pyleak" in line and line[:2] == "E "]
    assert "ModuleNotFoundError: check_async_model" in line
    assert line.endswith("pip install 'llm-async-attachments[testing]'")


def test_importing_the_pytest_plugin_imports_neither_llm_nor_pyleak():
    """pytest imports it in every run wherever the package is installed."""
    code = (
        "import sys, llm_async_attachments.pytest_plugin; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'llm', 'httpx', 'pyleak'}))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert run([sys.executable, "-c", code], ROOT, env).strip() == "[]"
