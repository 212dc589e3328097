"""The guard: sync attachment reads that would block an event loop are stopped first.

:func:`llm_async_attachments.install` patches ``llm.Attachment`` so that
``resolve_type()``, ``content_bytes()``, ``base64_content()`` and ``id()``

* answer from the prepared state when :func:`prepare_attachments` has run
  (no I/O at all), and otherwise
* check, before any I/O, whether they are running on a thread with a running
  event loop, and then raise, warn or carry on according to the guard mode.

Calls that need no I/O (an explicit ``type``, ``content=`` bytes, a URL's
``id()``) behave exactly as in llm, as does everything on threads without a
running loop.

llm 0.36's ``log_to_db()`` also reads path attachments itself, with
``open()`` in ``llm.logs._canonical_attachment`` (to hash their bytes for
the log); that function is patched the same way: a prepared attachment's hash
is the SHA-256 of the bytes prepare read (the bytes the model was sent), and
an unprepared one is checked before the file is opened. (llm 0.30 to 0.35
log through ``id()`` and ``resolve_type()`` alone, which are covered above.)
"""

from __future__ import annotations

import asyncio
import functools
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import FrameType
from typing import Any

import llm

from . import reads
from .errors import BlockingAttachmentAccessError, redact
from .state import UNSET, peek

__all__ = ["BlockingAttachmentAccessWarning", "describe", "executing_async_model"]


class BlockingAttachmentAccessWarning(RuntimeWarning):
    """A sync attachment read blocked a running event loop (guard mode ``warn``,
    or mode ``raise`` outside async model execution)."""


_executing: ContextVar[bool] = ContextVar("llm_async_attachments_executing", default=False)
# Set on an attachment once mode "raise" has warned about it outside model execution.
_WARNED = "_llm_async_attachments_warned"


@contextmanager
def executing_async_model() -> Iterator[None]:
    """Mark the enclosed code as an async model's execution, where mode ``raise`` raises."""
    token = _executing.set(True)
    try:
        yield
    finally:
        _executing.reset(token)


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
    from .config import get_config

    mode = get_config(strict=False).guard
    if mode == "off":
        return
    inside = _executing.get()
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


def _unprepared_read(attachment: Any, read: Callable[[Any], bytes | None]) -> bytes | None:
    """A model read content that prepare left out, as this model had not read that kind
    of attachment before: the read succeeds, blocking, from the disk tier if it can,
    else as llm alone would; it is remembered, and prepared from the next turn on."""
    if attachment.url:
        from . import urlcache  # rarely needed: not imported with the plugin
        from .config import get_config

        kept = urlcache.read_back(attachment.url, get_config(strict=False))
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


def _would_block_type(attachment: Any) -> bool:
    return not attachment.type and bool(attachment.path or attachment.url)


def _would_block_content(attachment: Any) -> bool:
    return not attachment.content and bool(attachment.path or attachment.url)


def _would_block_id(attachment: Any) -> bool:
    return attachment._id is None and not attachment.content and bool(attachment.path)


def _install() -> None:
    cls = llm.Attachment
    if getattr(cls, "_llm_async_attachments_patched", False):
        return
    original: dict[str, Callable[..., Any]] = {
        name: getattr(cls, name)
        for name in ("resolve_type", "content_bytes", "base64_content", "id", "__repr__")
    }

    def resolve_type(self: llm.Attachment) -> str | None:
        if _would_block_type(self):
            state = peek(self)
            if state is not None and state.type is not UNSET:
                return state.type
            check(self, "resolve_type")
        resolved: str | None = original["resolve_type"](self)
        return resolved

    def content_bytes(self: llm.Attachment) -> bytes | None:
        execution = reads.current()
        if execution is not None:
            execution.saw(self, "content")
        if _would_block_content(self):
            state = peek(self)
            if state is not None and state.content is not None:
                return state.content
            if execution is not None and execution.offered(self):
                return _unprepared_read(self, original["content_bytes"])
            check(self, "content_bytes")
        content: bytes | None = original["content_bytes"](self)
        return content

    def base64_content(self: llm.Attachment) -> str:
        execution = reads.current()
        if execution is not None:
            execution.saw(self, "base64")
        state = peek(self)
        if state is not None and state.base64 is not None:
            return state.base64
        if (
            _would_block_content(self)
            and (state is None or state.content is None)
            and (execution is None or not execution.offered(self))
        ):
            check(self, "base64_content")
        encoded: str = original["base64_content"](self)  # reads through content_bytes()
        return encoded

    def id(self: llm.Attachment) -> str:
        if self._id is None:
            state = peek(self)
            if state is not None and state.id is not None:
                return state.id
            if _would_block_id(self):
                check(self, "id")
        hashed: str = original["id"](self)
        return hashed

    def __repr__(self: llm.Attachment) -> str:
        # repr() must never raise: debuggers, loggers and pytest call it.
        state = peek(self)
        if _would_block_id(self) and (state is None or state.id is None):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                return f'<Attachment: (unprepared) path="{self.path}">'
        text: str = original["__repr__"](self)
        return text

    for function in (resolve_type, content_bytes, base64_content, id, __repr__):
        name = function.__name__
        setattr(cls, name, functools.update_wrapper(function, original[name]))
    cls._llm_async_attachments_patched = True  # type: ignore[attr-defined]
    _install_log_hash()


def _install_log_hash() -> None:
    """Make llm >= 0.36's log hashing of path attachments answer from the prepared state."""
    try:
        from llm import logs
    except ImportError:
        return  # llm < 0.36: log_to_db() reads attachments through the patched methods
    original = getattr(logs, "_canonical_attachment", None)
    if original is None or getattr(original, "_llm_async_attachments_patched", False):
        return

    def _canonical_attachment(attachment: Any) -> Any:
        if not attachment.content and attachment.path:  # llm would open() the file
            state = peek(attachment)
            if state is not None and state.id is not None:
                return {"id": state.id, "type": attachment.resolve_type()}
            check(
                attachment,
                "log_to_db",
                message=f"llm's log_to_db() would read the attachment "
                f"{describe(attachment)} synchronously, to hash it, and block the running "
                "event loop. Fix it in one of two ways: await "
                "llm_async_attachments.prepare_attachments(prompt, conversation) (or "
                "await the response) before logging; or log in a worker thread (await "
                "asyncio.to_thread(response.log_to_db, db)).",
            )
        return original(attachment)

    _canonical_attachment.__doc__ = original.__doc__
    _canonical_attachment.__wrapped__ = original  # type: ignore[attr-defined]
    _canonical_attachment._llm_async_attachments_patched = True  # type: ignore[attr-defined]
    logs._canonical_attachment = _canonical_attachment
