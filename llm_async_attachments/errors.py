"""The exceptions this package raises.

Every failure to load an attachment is an :class:`AttachmentError`; catch that
to handle bad input as a whole, or a subclass to handle one kind. Messages say
which attachment, what happened, the limit involved and what to do.
:class:`BlockingAttachmentAccessError` is separate: it reports a programming
error (blocking I/O on an event loop), not bad input.

:class:`ConfigurationError` is separate too, and a ``ValueError``: a setting
is invalid, an ``LLM_ASYNC_ATTACHMENTS_*`` environment variable or a
``Config`` field. It is the operator's mistake, not the user's, so it is
deliberately not an ``AttachmentError``: an app that answers
``AttachmentError`` with a 4xx must not blame its users for its own
configuration. :class:`ConfigurationWarning` reports an invalid environment
variable once, when sync llm carries on with the default.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "AttachmentAddressRefused",
    "AttachmentError",
    "AttachmentFetchError",
    "AttachmentHTTPStatusError",
    "AttachmentPathError",
    "AttachmentTimeout",
    "AttachmentTooLarge",
    "AttachmentsTotalTooLarge",
    "BlockingAttachmentAccessError",
    "ConfigurationError",
    "ConfigurationWarning",
    "TooManyRedirects",
    "UnsupportedAttachmentURL",
]


class AttachmentError(Exception):
    """An attachment could not be loaded. ``source`` is its URL or path."""

    def __init__(self, message: str, *, source: str) -> None:
        super().__init__(message)
        self.source = source


class AttachmentTooLarge(AttachmentError):
    """An attachment is bigger than ``Config.max_bytes``.

    Raised on a ``Content-Length`` or file size before any body is read, or as
    soon as the decoded bytes read pass the limit (no, lying or compressed
    lengths). ``limit`` is the limit in bytes; ``size`` is the declared size,
    or ``None`` when the body was cut off while streaming.
    """

    def __init__(self, message: str, *, source: str, limit: int, size: int | None) -> None:
        super().__init__(message, source=source)
        self.limit = limit
        self.size = size


class AttachmentsTotalTooLarge(AttachmentTooLarge):
    """One ``prepare_attachments`` call would read more than ``Config.max_total_bytes``."""


class AttachmentFetchError(AttachmentError):
    """A URL attachment could not be downloaded: connection, protocol or body errors."""


class AttachmentHTTPStatusError(AttachmentFetchError):
    """The server answered with an error status; ``status_code`` holds it."""

    def __init__(self, message: str, *, source: str, status_code: int) -> None:
        super().__init__(message, source=source)
        self.status_code = status_code


class AttachmentTimeout(AttachmentFetchError):
    """The server was too slow: ``Config.timeout`` between reads, or ``Config.deadline`` in all."""


class TooManyRedirects(AttachmentFetchError):
    """More than 3 redirects (llm's own limit), or a redirect loop."""


class AttachmentAddressRefused(AttachmentError):
    """``Config.block_private`` is on and the URL, or a redirect, reaches a non-public address.

    ``address`` is the refused address and ``kind`` what it is (``a loopback
    address``, ``a private address``, ...).
    """

    def __init__(self, message: str, *, source: str, address: str, kind: str) -> None:
        super().__init__(message, source=source)
        self.address = address
        self.kind = kind


class UnsupportedAttachmentURL(AttachmentError):
    """The URL is malformed or uses a scheme other than ``http``/``https``.

    Also raised when a redirect points to such a URL.
    """


class AttachmentPathError(AttachmentError):
    """A path attachment cannot be read: missing, a directory, a FIFO or socket, no permission."""


class BlockingAttachmentAccessError(RuntimeError):
    """A sync attachment read would have done blocking I/O on a running event loop.

    Raised before any I/O starts. ``attachment`` is the ``llm.Attachment`` and
    ``method`` the method that was called.
    """

    def __init__(self, message: str, *, attachment: object, method: str) -> None:
        super().__init__(message)
        self.attachment = attachment
        self.method = method


class ConfigurationError(ValueError):
    """A setting is invalid: an ``LLM_ASYNC_ATTACHMENTS_*`` variable or a ``Config`` field.

    ``setting`` names it (``LLM_ASYNC_ATTACHMENTS_MAX_BYTES``, or
    ``Config.max_bytes``) and ``value`` is the value refused; the message
    also says what is expected, with an example. Raised by ``Config(...)``,
    ``Config.from_env()``, and by async use (``prepare_attachments()``, an
    async model, ``AsyncAttachment``) while the environment holds an invalid
    value; further invalid variables are added to it as notes.
    """

    def __init__(self, message: str, *, setting: str, value: object) -> None:
        super().__init__(message)
        self.setting = setting
        self.value = value


class ConfigurationWarning(UserWarning):
    """An ``LLM_ASYNC_ATTACHMENTS_*`` variable is invalid; sync llm goes on with the default.

    Shown once, when the environment is read, as one line naming the
    variable, the value and what is expected.
    """


def redact(url: str) -> str:
    """``https://user:secret@host/x`` -> ``https://user:***@host/x``, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
