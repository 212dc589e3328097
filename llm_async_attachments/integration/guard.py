"""The guard: sync attachment reads that would block an event loop are stopped first.

``install`` patches ``llm.Attachment`` so that its reads answer from the
prepared state when :func:`prepare_attachments` has run (no I/O at all), and
otherwise ask :func:`check`, before any I/O, whether they are running on a
thread with a running event loop; it then raises, warns or lets them carry on
according to the guard mode. Calls that need no I/O (an explicit ``type``,
``content=`` bytes, a URL's ``id()``) behave exactly as in llm, as does
everything on threads without a running loop.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import FrameType
from typing import Any

import llm

from ..errors import BlockingAttachmentAccessError, redact

__all__ = [
    "EXECUTING",
    "BlockingAttachmentAccessWarning",
    "check",
    "check_log_read",
    "describe",
    "executing_async_model",
    "unprepared_read",
]


class BlockingAttachmentAccessWarning(RuntimeWarning):
    """A sync attachment read blocked a running event loop (guard mode ``warn``,
    or mode ``raise`` outside async model execution)."""


EXECUTING: ContextVar[bool] = ContextVar("llm_async_attachments_executing", default=False)
"""Set while an async model's code runs (mode ``raise`` raises there)."""
# Set on an attachment once mode "raise" has warned about it outside model execution.
_WARNED = "_llm_async_attachments_warned"


@contextmanager
def executing_async_model() -> Iterator[None]:
    """Mark the enclosed code as an async model's execution, where mode ``raise`` raises."""
    token = EXECUTING.set(True)
    try:
        yield
    finally:
        EXECUTING.reset(token)


def describe(attachment: Any) -> str:
    """A short name for an attachment in messages: its URL, its path, or its size."""
    if getattr(attachment, "url", None):
        return f"URL {redact(attachment.url)}"
    if getattr(attachment, "path", None):
        return f"path {attachment.path}"
    content = getattr(attachment, "content", None)
    return f"content ({len(content or b'')} bytes)"


def check(attachment: Any, method: str, *, message: str | None = None) -> None:
    """Raise or warn if a blocking read of ``attachment`` is about to run on an event loop.

    ``message`` replaces the one written for ``llm.Attachment.<method>()``.
    Mode ``raise`` warns outside async model execution (a notebook's sync
    llm calls, say) once per attachment: per call site would not do, as every
    read of a plugin comes from the same line of its code, so a harmless
    local file would hide every later download.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop on this thread: blocking is harmless here
    # Imported here, not with the plugin (every llm command loads it, and most never
    # read an attachment on a loop); strict=False: a bad variable must not turn a
    # warning into an error.
    from ..config import get_config

    mode = get_config(strict=False).guard
    if mode == "off":
        return
    inside = EXECUTING.get()
    if message is None:
        message = _message(attachment, method, mode, inside)
    else:
        message = f"{message} (LLM_ASYNC_ATTACHMENTS_GUARD={mode})"
    if mode == "strict" or (mode == "raise" and inside):
        raise BlockingAttachmentAccessError(message, attachment=attachment, method=method)
    if mode == "raise":
        if attachment.__dict__.get(_WARNED):
            return
        attachment.__dict__[_WARNED] = True
    warnings.warn(message, BlockingAttachmentAccessWarning, stacklevel=3)


def _message(attachment: Any, method: str, mode: str, inside: bool) -> str:
    """What happened, and the fix that suits whoever is reading: a plugin, sync llm, or code."""
    what = "download" if not attachment.path else "read"
    problem = (
        f"llm.Attachment.{method}() on the attachment {describe(attachment)} would "
        f"{what} it synchronously and block the running event loop."
    )
    setting = f"(LLM_ASYNC_ATTACHMENTS_GUARD={mode})"
    model = None if inside else _reading_model()
    if inside or isinstance(model, (llm.AsyncModel, llm.AsyncKeyModel)):
        return (
            f"{problem} Fix it in one of three ways: await "
            "llm_async_attachments.prepare_attachments(prompt, conversation) before the "
            "sync call; or set supports_async_attachments = True on the model and await "
            f"attachment.{method}(); or run the sync code in a worker thread (await "
            f"asyncio.to_thread(...)). {setting}"
        )
    if model is not None:
        model_id = getattr(model, "model_id", None) or "..."
        return (
            f"{problem} The sync model {model_id!r} is running on the event loop's thread "
            "(in a notebook, or in async code). Use its async form, which prepares "
            f"attachments without blocking: model = llm.get_async_model({model_id!r}), then "
            "response = model.prompt(...) and await response.text(). Or keep the sync "
            "model and run it in a worker thread: await asyncio.to_thread(response.text). "
            f"{setting}"
        )
    return (
        f"{problem} Await it instead: await attachment.to_async().{method}(), or await "
        "llm_async_attachments.prepare_attachments(prompt, conversation) before the sync "
        f"call; or run the sync code in a worker thread (await asyncio.to_thread(...)). "
        f"{setting}"
    )


def _reading_model(depth: int = 64) -> Any:
    """The llm model whose code is doing the read: the nearest ``self`` up the stack
    that is one (``model.prompt(...).text()`` runs the sync model's ``execute()``)."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, (llm.Model, llm.KeyModel, llm.AsyncModel, llm.AsyncKeyModel)):
            return candidate
        frame = frame.f_back
    return None


def unprepared_read(attachment: Any, read: Callable[[Any], bytes | None]) -> bytes | None:
    """A model read content that prepare left out, as this model had not read that kind
    of attachment before: the read succeeds, blocking, from the disk tier if it can,
    else as llm alone would; it is remembered, and prepared from the next turn on."""
    if attachment.url:
        # Rarely needed: not imported with the plugin (every llm command loads it).
        from ..config import get_config
        from ..store import shared_responses

        kept = shared_responses.read_back(attachment.url, get_config(strict=False))
        if kept is not None:
            return kept
    warnings.warn(
        f"llm.Attachment.content_bytes() on the attachment {describe(attachment)}: its "
        "content was not prepared, because this model had not read attachments of its "
        "kind before, so it is read now, blocking the event loop once. It will be "
        "prepared from now on.",
        BlockingAttachmentAccessWarning,
        stacklevel=3,
    )
    return read(attachment)


def check_log_read(attachment: Any) -> None:
    """:func:`check` for llm's ``log_to_db()``, about to read a path attachment to hash it."""
    check(
        attachment,
        "log_to_db",
        message=f"llm's log_to_db() would read the attachment {describe(attachment)} "
        "synchronously, to hash it, and block the running event loop. Fix it in one of two "
        "ways: await llm_async_attachments.prepare_attachments(prompt, conversation) (or "
        "await the response) before logging; or log in a worker thread (await "
        "asyncio.to_thread(response.log_to_db, db)).",
    )
