"""The one-line check that an async model reads attachments without blocking.

It needs pyleak, from the ``testing`` extra; without it, importing this module
raises ``ModuleNotFoundError`` naming the extra to install.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llm

try:
    from pyleak import no_event_loop_blocking, no_task_leaks, no_thread_leaks
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        f"check_async_model and llm_async_attachments.testing.check_never_blocks need "
        f"{missing.name}, which is not installed. It comes with the plugin-author kit: "
        "pip install 'llm-async-attachments[testing]'",
        name=missing.name,
    ) from missing

from ..config import configure, get_config
from ..integration.hook import prepare_before_execute
from . import samples
from .server import FileServer

# pyleak types some "action" parameters with an enum of str values it does not export.
_RAISE: Any = "raise"
# What each sample kind is, for picking attachments a model accepts.
_KINDS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
    "application/pdf": "pdf",
    "audio/wav": "wav",
    "audio/mpeg": "mp3",
}


def sample_attachments(model: Any, server: FileServer, folder: Path) -> list[llm.Attachment]:
    """A URL, a path and a bytes attachment of a type ``model`` accepts (none if it takes none)."""
    accepted = [t for t in _KINDS if t in getattr(model, "attachment_types", ())]
    if not accepted:
        return []
    kind = _KINDS[accepted[0]]
    data = samples.SAMPLES[kind]
    path = folder / f"sample.{kind}"
    path.write_bytes(data)
    url = server.add(f"/sample.{kind}", data, content_type=accepted[0], latency=0.2)
    return [
        llm.Attachment(url=url),
        llm.Attachment(path=str(path)),
        llm.Attachment(content=data),
    ]


async def check_never_blocks(
    model: Any,
    attachments: Sequence[llm.Attachment],
    *,
    prompt: str = "Describe the attachments.",
    threshold: float = 0.1,
    **options: Any,
) -> str:
    """Run ``model.prompt(prompt, attachments=...)`` to the end; fail if anything blocks.

    The guard is strict for the call (a sync attachment read that would do I/O
    raises ``BlockingAttachmentAccessError``), pyleak fails on an event-loop
    stall over ``threshold`` seconds, and on tasks or threads left running.
    The model is wrapped as the llm plugin wraps registered models. Returns
    the response text.
    """
    llm.get_async_models()  # llm loads plugins and wraps registered classes here
    prepare_before_execute(model)
    before = get_config()
    configure(dataclasses.replace(before, guard="strict"))
    try:
        # grace_period=0: pyleak's own grace wait is a time.sleep on this loop;
        # the asyncio.sleep below gives finished threads the same time to exit.
        with no_thread_leaks(action=_RAISE, grace_period=0):
            async with (
                no_task_leaks(action=_RAISE),
                no_event_loop_blocking(action=_RAISE, threshold=threshold),
            ):
                response = model.prompt(prompt, attachments=list(attachments), **options)
                text: str = await response.text()
            await asyncio.sleep(0.1)
    finally:
        configure(before)
    return text
