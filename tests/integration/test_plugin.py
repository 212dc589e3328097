"""The llm plugin is a guest: with default settings it changes no model llm lists or returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = "llm-async-attachments"

MODELS = """
import json, llm

def seen(models):
    return sorted((m.model_id, type(m).__module__, type(m).__qualname__) for m in models)

try:
    llm.get_async_model("completion-babbage")
    babbage = "async form"
except llm.UnknownModelError:
    babbage = "unknown"
print(json.dumps({
    "sync": seen(llm.get_models()),
    "async": seen(llm.get_async_models()),
    "completion-babbage": babbage,
    "plugins": sorted(p["name"] for p in llm.get_plugins()),
}))
"""


def llm_plugins() -> list[str]:
    """Every installed distribution with an llm plugin entry point."""
    found = {
        dist.metadata["Name"]
        for dist in distributions()
        if any(entry.group == "llm" for entry in dist.entry_points)
    }
    return sorted(found)


def models_with(plugins: list[str], tmp_path: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLM_LOAD_PLUGINS": ",".join(plugins)}
    env["LLM_USER_PATH"] = str(tmp_path / "llm-user")
    for name in list(env):
        if name.startswith("LLM_ASYNC_ATTACHMENTS_"):
            del env[name]  # default settings
    result = subprocess.run(
        [sys.executable, "-c", MODELS], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    seen: dict[str, object] = json.loads(result.stdout)
    return seen


def test_installing_the_package_changes_no_model_llm_lists_or_returns(tmp_path):
    others = [name for name in llm_plugins() if name != OURS]

    without = models_with(others, tmp_path)
    with_us = models_with([*others, OURS], tmp_path)

    assert OURS in with_us.pop("plugins")  # type: ignore[operator]
    assert OURS not in without.pop("plugins")  # type: ignore[operator]
    assert with_us == without
