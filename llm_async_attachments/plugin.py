"""The llm plugin: every async model llm hands out prepares its attachments first."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import llm

from .hook import prepare_before_execute

_wrapped: set[type] = set()


@llm.hookimpl(hookwrapper=True)
def register_models(register: Any, model_aliases: list[Any]) -> Generator[None, Any, None]:
    """Wrap the classes of the async models every other plugin registered.

    As a hook wrapper it runs after all other ``register_models`` hooks. llm
    runs them on every ``get_async_model()`` call, with new model instances
    each time, so the wrapping is done once per class: after the first call
    this costs one set lookup per model.
    """
    yield
    for entry in model_aliases:
        cls = type(entry.async_model)
        if entry.async_model is not None and cls not in _wrapped:
            prepare_before_execute(cls)
            _wrapped.add(cls)
