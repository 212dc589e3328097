"""Every Python example in docs/ runs, against loopback servers; the config table is current."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

import llm_async_attachments as laa
from llm_async_attachments.caps import human
from llm_async_attachments.testing import samples

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLES = [
    pytest.param(block, id=f"{page.name}:{number}")
    for page in sorted(DOCS.glob("*.md"))
    for number, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))
]


@pytest.fixture
def example_server(file_server):
    """The files the examples name on https://example.com, served from 127.0.0.1."""
    file_server.add("/cat.png", samples.png(), content_type="image/png")
    file_server.add("/report.pdf", samples.pdf(), content_type="application/pdf")
    return file_server


@pytest.mark.parametrize("source", EXAMPLES)
async def test_doc_example_runs(source, example_server, openai_server):
    source = source.replace("https://example.com", example_server.base_url)
    # The loopback server stands in for a public host: exempt it from block_private,
    # which the web-app example turns on, as example.com would need no exemption.
    laa.configure(dataclasses.replace(laa.get_config(), allow=("127.0.0.1",)))
    code = compile(source, "<docs>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, {"__name__": "docs_example"})
    if result is not None:
        await result


def test_configuration_reference_matches_the_config_object():
    rows = ["| field | environment variable | default | meaning |", "|---|---|---|---|"]
    for field in dataclasses.fields(laa.Config):
        default = field.default
        if isinstance(default, int) and default > 1024:
            default = human(default)
        rows.append(
            f"| `{field.name}` | `LLM_ASYNC_ATTACHMENTS_{field.name.upper()}` "
            f"| `{default}` | {field.metadata['doc']} |"
        )
    assert "\n".join(rows) in (DOCS / "configuration.md").read_text()


def test_every_public_name_has_a_docstring():
    missing = [name for name in laa.__all__ if not (getattr(laa, name).__doc__ or "").strip()]
    assert missing == []


SHELL_SETTINGS = [
    pytest.param(line, id=f"{page.name}:{line.split('=')[0].split()[-1]}")
    for page in sorted(DOCS.glob("*.md"))
    for block in re.findall(r"```sh\n(.*?)```", page.read_text(), re.S)
    for line in block.splitlines()
    if line.startswith("export LLM_ASYNC_ATTACHMENTS_")
]


@pytest.mark.parametrize("line", SHELL_SETTINGS)
def test_every_setting_a_shell_example_exports_is_valid(line):
    name, _, value = line.removeprefix("export ").partition("=")
    config = laa.Config.from_env({name: value})  # raises ConfigurationError if not
    assert config != laa.Config() or value == "", line
