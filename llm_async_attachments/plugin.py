"""The llm plugin: every async model prepares its attachments before it runs, and, with
the bridge turned on, sync-only models get an async form. Also the
``llm async-attachments`` commands.

llm imports this module when it loads its plugins, for every ``llm`` command
(``llm --version`` too); that is when the guard goes on ``llm.Attachment``
(importing the package itself changes nothing). So it imports only what the
guard needs: the bridge and the hook load when llm first asks for models,
and the HTTP layer (httpx2 and its transports) when a URL is first fetched.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import click
import llm

from .integration.install import install, standing_down

_wrapped: set[type] = set()

install()


@llm.hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``llm async-attachments`` to llm's command line."""
    cli.add_command(_Commands(name="async-attachments", help=_COMMANDS_HELP))


_COMMANDS_HELP = "How llm-async-attachments prepares attachments for async models."


class _Commands(click.Group):
    """``llm async-attachments``, its commands loaded only when it runs: llm registers
    every plugin's commands for every ``llm`` command, and the commands import
    prepare, the configuration and the errors (tens of milliseconds)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return _commands().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _commands().get_command(ctx, cmd_name)


def _commands() -> click.Group:
    from .cli import async_attachments

    return async_attachments


@llm.hookimpl(hookwrapper=True)
def register_models(register: Any, model_aliases: list[Any]) -> Generator[None, Any, None]:
    """Bridge sync-only models (if the bridge is on), then wrap the classes of every
    async model.

    As a hook wrapper it runs after all other ``register_models`` hooks, so it
    sees every model and every async form they registered (those of
    ``llm-all-models-async`` included). llm runs them on every
    ``get_async_model()`` call, with new model instances each time, so the
    classes are made and wrapped once: after the first call this costs one
    bridge instance per sync-only model and one set lookup per model.
    """
    yield
    if standing_down() is not None:
        return  # llm changed under us: it works as if we were not installed
    from .config import get_config
    from .integration.bridge import add_async_forms
    from .integration.hook import prepare_before_execute

    # Sync llm loads plugins too (``llm models``, ``llm.get_model()``): an invalid
    # environment variable must not break it, so never raise here.
    if get_config(strict=False).bridge:
        add_async_forms(model_aliases)
    for entry in model_aliases:
        cls = type(entry.async_model)
        if entry.async_model is not None and cls not in _wrapped:
            prepare_before_execute(cls)
            _wrapped.add(cls)
