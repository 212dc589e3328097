"""Safe, non-blocking attachment loading for llm's async models.

Importing this package installs the guard on ``llm.Attachment`` (see
:mod:`llm_async_attachments.guard`) and gives it a ``to_async()`` method.
"""

from . import attachment as _attachment
from . import guard as _guard
from .attachment import AsyncAttachment, to_async
from .bridge import BridgeInterrupted, BridgeQueueTimeout, bridge_model
from .config import Config, configure, get_config
from .errors import (
    AttachmentAddressRefused,
    AttachmentError,
    AttachmentFetchError,
    AttachmentHTTPStatusError,
    AttachmentPathError,
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
from .prepare import PrepareSummary, UrlPolicy, prepare_attachments

__all__ = [
    "AsyncAttachment",
    "AttachmentAddressRefused",
    "AttachmentError",
    "AttachmentFetchError",
    "AttachmentHTTPStatusError",
    "AttachmentPathError",
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
    "prepare_attachments",
    "prepare_before_execute",
    "to_async",
]

_guard._install()
_attachment._install()
