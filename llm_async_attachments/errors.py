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
:class:`CacheWarning` reports a cache tier (the disk, Redis) that cannot be
used as it should: the cache carries on without it, and no caller sees an
exception.
"""

from __future__ import annotations

import re
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

__all__ = [
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
    "CacheWarning",
    "ConfigurationError",
    "ConfigurationWarning",
    "DiskCacheWarning",
    "SharedCacheWarning",
    "TooManyRedirects",
    "UnsupportedAttachmentURL",
]


def _rebuild(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """An exception of ``cls`` with ``args`` and no other fields, ``__init__`` not called."""
    return cls.__new__(cls, *args)


def _reduce(self: BaseException) -> tuple[Any, ...]:
    """Copy and pickle support for exceptions whose fields are keyword-only arguments.

    ``BaseException`` rebuilds a copy as ``cls(*args)``, which fails when
    ``__init__`` has required keyword-only arguments. This rebuilds it
    without calling ``__init__`` and restores the fields (and any notes)
    from ``__dict__``.
    """
    return (_rebuild, (type(self), self.args), dict(self.__dict__))


class AttachmentError(Exception):
    """An attachment could not be loaded. ``source`` is its URL or path.

    Every subclass can be copied (``copy.copy``, ``copy.deepcopy``) and
    pickled with all its fields and notes.
    """

    def __init__(self, message: str, *, source: str) -> None:
        super().__init__(message)
        self.source = source

    __reduce__ = _reduce

    def copy(self) -> Self:
        """A new exception of the same class, message and fields, for another caller.

        Without the notes (``add_note()``) and traceback of this one, and not
        linked to it; its ``__cause__`` is kept. When tasks share one fetch,
        each task that waited for a failed fetch raises such a copy, so
        what one caller adds to its exception never shows up in another's.
        """
        twin = _rebuild(type(self), self.args)
        twin.__dict__.update(
            (name, value) for name, value in self.__dict__.items() if name != "__notes__"
        )
        twin.__cause__ = self.__cause__
        twin.__suppress_context__ = self.__suppress_context__
        return twin  # type: ignore[return-value]


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


class AttachmentQueueTimeout(AttachmentError):
    """No fetch slot came free within ``Config.fetch_queue_timeout``.

    The event loop already had ``Config.concurrency`` fetches running with
    the same settings; the attachment's server was never contacted, so this
    says nothing about it (unlike :class:`AttachmentTimeout`).
    """


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
    """The URL is malformed or uses a scheme other than ``http``/``https`` (or ``data:``).

    Also raised when a redirect points to such a URL (a ``data:`` one too), and for a
    ``data:`` URL that cannot be decoded or whose bytes contradict its type.
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

    __reduce__ = _reduce


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

    __reduce__ = _reduce


class ConfigurationWarning(UserWarning):
    """An ``LLM_ASYNC_ATTACHMENTS_*`` variable is invalid; sync llm goes on with the default.

    Shown once, when the environment is read, as one line naming the
    variable, the value and what is expected.
    """


class CacheWarning(RuntimeWarning):
    """A cache tier could not do its work; content comes from memory and the network.

    Issued once per tier and kind of failure (a full disk, a directory others
    can write, a server that does not answer), with what failed and what to
    check. Preparing goes on: a failed write keeps nothing, a failed read is a
    miss.
    """


class DiskCacheWarning(CacheWarning):
    """The disk tier (``disk_cache_dir``) failed, or was refused as unsafe."""


class SharedCacheWarning(CacheWarning):
    """The fleet tier (``shared_cache_url``: Redis or Valkey) failed or is unreachable."""


_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")
_DATA_SHOWN = 48  # characters of a data: URL shown in messages


def redact(url: str) -> str:
    """``https://user:secret@host/x`` -> ``https://user:***@host/x``, for messages and logs;
    a ``password=`` query value (as Redis URLs may carry) is hidden too.

    A long ``data:`` URL is cut to its start and its length: its bytes are no name.
    """
    if url[:5].lower() == "data:" and len(url) > _DATA_SHOWN:
        return f"{url[:_DATA_SHOWN]}... ({len(url):,} characters)"
    if "password=" in url.lower():
        url = _QUERY_PASSWORD.sub(r"\1***", url)
    if "@" not in url:
        return url  # no credentials: the common case, without parsing
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
