"""The llm plugin: every async model llm hands out prepares its attachments first."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import llm

from .hook import prepare_before_execute


@llm.hookimpl(hookwrapper=True)
def register_models(register: Any, model_aliases: list[Any]) -> Generator[None, Any, None]:
    """Wrap the async models every other plugin registered (it runs after all of them).

    llm calls this on every ``get_async_model()``, so it only sets two
    attributes per async model: a few microseconds per registry call.
    """
    yield
    for entry in model_aliases:
        if entry.async_model is not None:
            prepare_before_execute(entry.async_model)
