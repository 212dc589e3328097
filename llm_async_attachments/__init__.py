"""Safe, non-blocking attachment loading for llm's async models.

Importing the package changes nothing in llm, and imports neither llm nor
httpx until a name below is first used: the pytest plugin lives in this
package and is imported by every pytest run wherever it is installed. The
guard on ``llm.Attachment`` (and its ``to_async()`` method) is installed by
the llm plugin when llm loads its plugins, by :func:`install`, and by
:func:`prepare_attachments` and :func:`prepare_before_execute`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .attachment import AsyncAttachment, to_async
    from .bridge import BridgeInterrupted, BridgeQueueTimeout, bridge_model
    from .config import Config, configure, get_config
    from .errors import (
        AttachmentAddressRefused,
        AttachmentError,
        AttachmentFetchError,
        AttachmentHTTPStatusError,
        AttachmentPathError,
        AttachmentQueueTimeout,
        AttachmentsTotalTooLarge,
        AttachmentTimeout,
        AttachmentTooLarge,
        BlockingAttachmentAccessError,
        ConfigurationError,
        ConfigurationWarning,
        TooManyRedirects,
        UnsupportedAttachmentURL,
    )
    from .guard import BlockingAttachmentAccessWarning
    from .hook import prepare_before_execute
    from .patch import install
    from .prepare import PrepareSummary, UrlPolicy, prepare_attachments

__all__ = [
    "AsyncAttachment",
    "AttachmentAddressRefused",
    "AttachmentError",
    "AttachmentFetchError",
    "AttachmentHTTPStatusError",
    "AttachmentPathError",
    "AttachmentQueueTimeout",
    "AttachmentTimeout",
    "AttachmentTooLarge",
    "AttachmentsTotalTooLarge",
    "BlockingAttachmentAccessError",
    "BlockingAttachmentAccessWarning",
    "BridgeInterrupted",
    "BridgeQueueTimeout",
    "Config",
    "ConfigurationError",
    "ConfigurationWarning",
    "PrepareSummary",
    "TooManyRedirects",
    "UnsupportedAttachmentURL",
    "UrlPolicy",
    "bridge_model",
    "configure",
    "get_config",
    "install",
    "prepare_attachments",
    "prepare_before_execute",
    "to_async",
]

# Where each public name lives; the imports above say the same to type checkers.
_MODULES = {
    "attachment": ["AsyncAttachment", "to_async"],
    "bridge": ["BridgeInterrupted", "BridgeQueueTimeout", "bridge_model"],
    "config": ["Config", "configure", "get_config"],
    "errors": [
        "AttachmentAddressRefused",
        "AttachmentError",
        "AttachmentFetchError",
        "AttachmentHTTPStatusError",
        "AttachmentPathError",
        "AttachmentQueueTimeout",
        "AttachmentsTotalTooLarge",
        "AttachmentTimeout",
        "AttachmentTooLarge",
        "BlockingAttachmentAccessError",
        "ConfigurationError",
        "ConfigurationWarning",
        "TooManyRedirects",
        "UnsupportedAttachmentURL",
    ],
    "guard": ["BlockingAttachmentAccessWarning"],
    "hook": ["prepare_before_execute"],
    "patch": ["install"],
    "prepare": ["PrepareSummary", "UrlPolicy", "prepare_attachments"],
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
