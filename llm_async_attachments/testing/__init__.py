"""Test tools for plugin authors: a loopback attachment server, sample files, a check.

The pytest plugin (:mod:`llm_async_attachments.pytest_plugin`, loaded
automatically once the package is installed) turns these into fixtures:
``attachment_server``, ``strict_guard`` and ``check_async_model``.
"""

from __future__ import annotations

from .check import check_never_blocks
from .server import FileServer

__all__ = ["FileServer", "check_never_blocks"]
