"""What the package changes in llm, the one way to change it (:func:`install`), and
standing down when llm is not what the package expects.

Installed, ``llm.Attachment``'s ``resolve_type()``, ``content_bytes()``,
``base64_content()`` and ``id()`` answer from what prepare found, with no
I/O, and otherwise let the guard stop a read that would block a running event
loop. llm 0.36's ``log_to_db()`` also reads path attachments itself, to hash
their bytes for the log (``logs._canonical_attachment``); that is patched the
same way. ``llm.Attachment`` also gets a ``to_async()`` method.

Before changing anything, :func:`install` checks llm's private names
(``llm_internals.problems()``). If one differs, as a future llm may make
it, the package stands down: one ``RuntimeWarning`` names the package, llm's
version and what differed, nothing in llm is changed, and the llm plugin
registers nothing, so llm works as if the package were not installed.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import warnings
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import llm

from ..store.state import UNSET, peek
from . import guard, learned_reads, llm_internals
from .async_attachment import to_async

__all__ = ["install", "standing_down"]

_lock = threading.Lock()
_installed = False
_stood_down: str | None = None
_PATCHED = "_llm_async_attachments_patched"


def install() -> None:
    """Install the guard on ``llm.Attachment``, and its ``to_async()`` method.

    Patched, ``llm.Attachment``'s ``resolve_type()``, ``content_bytes()``,
    ``base64_content()`` and ``id()`` answer from what
    [`prepare_attachments`][llm_async_attachments.prepare_attachments] cached,
    and stop a read that would block a running event loop (the guard).

    The llm plugin calls this when llm loads its plugins, and so do
    ``prepare_attachments()`` and ``prepare_before_execute()``: call it
    yourself only if you read attachments before any of those ran, with
    llm's plugins not loaded (``LLM_LOAD_PLUGINS=''``, or models built by
    hand). Calling it again does nothing; importing the package does not call it.

    If the installed llm has changed a private name the package relies on,
    nothing is changed and one ``RuntimeWarning`` says what differed; see
    [design decisions](design.md), and ``llm async-attachments status``.
    """
    global _installed, _stood_down
    if _installed:
        return
    with _lock:
        if _installed:
            return
        found = llm_internals.problems()
        if found:
            _stood_down = "; ".join(found)
            warnings.warn(
                f"llm-async-attachments is standing down: llm {version('llm')} differs from "
                f"what it relies on ({_stood_down}). llm works as if it were not installed; "
                "upgrade llm-async-attachments, or report this at its issue tracker.",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            _patch_attachment()
            _patch_log_hasher()
        _installed = True


def standing_down() -> str | None:
    """Why the package stands down (what differs in llm), or ``None`` if it does not."""
    install()
    return _stood_down


_original: dict[str, Callable[..., Any]] = {}


def _resolve_type(self: llm.Attachment) -> str | None:
    if _would_block_type(self):
        state = peek(_original_of(self, learned_reads.current()))
        if state is not None and state.type is not UNSET:
            return state.type
        guard.check(self, "resolve_type")
    resolved: str | None = _original["resolve_type"](self)
    return resolved


def _content_bytes(self: llm.Attachment) -> bytes | None:
    execution = learned_reads.current()
    original = _original_of(self, execution)
    if execution is not None:
        execution.saw(original, "content")
    if _would_block_content(self):
        state = peek(original)
        if state is not None and state.content is not None:
            return state.content
        if execution is not None and execution.offered(original):
            return guard.unprepared_read(self, _original["content_bytes"])
        guard.check(self, "content_bytes")
    content: bytes | None = _original["content_bytes"](self)
    return content


def _base64_content(self: llm.Attachment) -> str:
    execution = learned_reads.current()
    original = _original_of(self, execution)
    if execution is not None:
        execution.saw(original, "base64")
    state = peek(original)
    if state is not None and state.base64 is not None:
        return state.base64
    if (
        _would_block_content(self)
        and (state is None or state.content is None)
        and (execution is None or not execution.offered(original))
    ):
        guard.check(self, "base64_content")
    encoded: str = _original["base64_content"](self)  # reads through content_bytes()
    return encoded


def _hash_id(self: llm.Attachment) -> str:
    if llm_internals.attachment_id(self) is None:
        state = peek(_original_of(self, learned_reads.current()))
        if state is not None and state.id is not None:
            return state.id
        if _would_block_id(self):
            guard.check(self, "id")
    hashed: str = _original["id"](self)
    return hashed


def _repr(self: llm.Attachment) -> str:
    # repr() must never raise: debuggers, loggers and pytest call it.
    state = peek(self)
    if _would_block_id(self) and (state is None or state.id is None):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            return f'<Attachment: (unprepared) path="{self.path}">'
    text: str = _original["__repr__"](self)
    return text


def _original_of(attachment: Any, execution: learned_reads.Execution | None) -> Any:
    """``attachment``, or, inside a model's ``execute()``, the prepared attachment it is
    a copy of (``copy.copy()``, ``copy.deepcopy()``, ``dataclasses.replace()`` with the
    same fields): the copy then reads without I/O, as the original does."""
    if execution is None or execution.offered(attachment) or peek(attachment) is not None:
        return attachment
    return execution.copied(attachment) or attachment


def _to_async(self: llm.Attachment) -> Any:
    """The [`AsyncAttachment`][] view of this attachment, sharing its cache."""
    return to_async(self)


_PATCHES: dict[str, Callable[..., Any]] = {
    "resolve_type": _resolve_type,
    "content_bytes": _content_bytes,
    "base64_content": _base64_content,
    "id": _hash_id,
    "__repr__": _repr,
}


def _would_block_type(attachment: Any) -> bool:
    return not attachment.type and bool(attachment.path or attachment.url)


def _would_block_content(attachment: Any) -> bool:
    return not attachment.content and bool(attachment.path or attachment.url)


def _would_block_id(attachment: Any) -> bool:
    return (
        llm_internals.attachment_id(attachment) is None
        and not attachment.content
        and bool(attachment.path)
    )


def _patch_attachment() -> None:
    cls = llm.Attachment
    if getattr(cls, _PATCHED, False):
        return
    for name, function in _PATCHES.items():
        _original[name] = getattr(cls, name)
        setattr(cls, name, functools.update_wrapper(function, _original[name]))
    _to_async.__name__ = _to_async.__qualname__ = "to_async"
    cls.to_async = _to_async  # type: ignore[attr-defined]
    setattr(cls, _PATCHED, True)


def _patch_log_hasher() -> None:
    """Make llm >= 0.36's log hashing of path attachments answer from the prepared state."""
    original = llm_internals.log_hasher()
    if original is None or getattr(original, _PATCHED, False):
        return

    def canonical_attachment(attachment: Any) -> Any:
        if not attachment.content and attachment.path:  # llm would open() the file
            state = peek(attachment)
            if state is not None and state.id is not None:
                return {"id": state.id, "type": attachment.resolve_type()}
            guard.check_log_read(attachment)
        return original(attachment)

    functools.update_wrapper(canonical_attachment, original)
    setattr(canonical_attachment, _PATCHED, True)
    llm_internals.replace_log_hasher(canonical_attachment)
