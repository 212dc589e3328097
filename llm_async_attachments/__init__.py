"""Safe, non-blocking attachment loading for llm's async models.

Importing the package changes nothing in llm, and imports neither llm nor
the HTTP client until a name below is first used: the pytest plugin lives in
this package and is imported by every pytest run wherever it is installed.
The guard on ``llm.Attachment`` (and its ``to_async()`` method) is installed
by the llm plugin when llm loads its plugins, by :func:`install`, and by
:func:`prepare_attachments` and :func:`prepare_before_execute`.

Each public name is written once, in the imports below, which say where it
lives; ``__all__`` and the lazy loading are read from them.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config as Config
    from .config import configure as configure
    from .config import get_config as get_config
    from .core.plan import UrlPolicy as UrlPolicy
    from .core.prepare import PrepareSummary as PrepareSummary
    from .credentials import Credential as Credential
    from .errors import AttachmentAddressRefused as AttachmentAddressRefused
    from .errors import AttachmentError as AttachmentError
    from .errors import AttachmentFetchError as AttachmentFetchError
    from .errors import AttachmentHTTPStatusError as AttachmentHTTPStatusError
    from .errors import AttachmentPathError as AttachmentPathError
    from .errors import AttachmentQueueTimeout as AttachmentQueueTimeout
    from .errors import AttachmentsTotalTooLarge as AttachmentsTotalTooLarge
    from .errors import AttachmentTimeout as AttachmentTimeout
    from .errors import AttachmentTooLarge as AttachmentTooLarge
    from .errors import BlockingAttachmentAccessError as BlockingAttachmentAccessError
    from .errors import CacheWarning as CacheWarning
    from .errors import ConfigurationError as ConfigurationError
    from .errors import ConfigurationWarning as ConfigurationWarning
    from .errors import DiskCacheWarning as DiskCacheWarning
    from .errors import SharedCacheWarning as SharedCacheWarning
    from .errors import TooManyRedirects as TooManyRedirects
    from .errors import UnsupportedAttachmentURL as UnsupportedAttachmentURL
    from .integration.async_attachment import AsyncAttachment as AsyncAttachment
    from .integration.async_attachment import to_async as to_async
    from .integration.bridge import BridgeInterrupted as BridgeInterrupted
    from .integration.bridge import BridgeQueueTimeout as BridgeQueueTimeout
    from .integration.bridge import bridge_model as bridge_model
    from .integration.guard import (
        BlockingAttachmentAccessWarning as BlockingAttachmentAccessWarning,
    )
    from .integration.hook import prepare_before_execute as prepare_before_execute
    from .integration.install import install as install
    from .integration.prepare import prepare_attachments as prepare_attachments


def _public_names() -> dict[str, str]:
    """Each public name and its module, as the imports above write them."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    (block,) = (node for node in tree.body if isinstance(node, ast.If))
    return {
        alias.name: f".{node.module}"
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


_HOME = _public_names()
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
