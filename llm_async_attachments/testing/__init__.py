"""Test tools for plugin authors: a loopback attachment server, sample files, a check.

The pytest plugin (:mod:`llm_async_attachments.pytest_plugin`, loaded
automatically once the package is installed) turns these into fixtures:
``attachment_server``, ``strict_guard`` and ``check_async_model``. The check
needs the ``testing`` extra: ``pip install 'llm-async-attachments[testing]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .server import FileServer

if TYPE_CHECKING:
    from .check import check_never_blocks

__all__ = ["FileServer", "check_never_blocks"]


def __getattr__(name: str) -> Any:
    # The check needs pyleak; the server and samples need only the standard library.
    if name == "check_never_blocks":
        from .check import check_never_blocks

        return check_never_blocks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
