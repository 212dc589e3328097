"""What the package changes in llm, and the one way to change it: :func:`install`."""

from __future__ import annotations

import threading

__all__ = ["install"]

_lock = threading.Lock()
_installed = False


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
    """
    global _installed
    if _installed:
        return
    from . import attachment, guard

    with _lock:
        if not _installed:
            guard._install()
            attachment._install()
            _installed = True
