"""AsyncAttachment: the async twin of ``llm.Attachment``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import llm

from ..core.cpu_jobs import base64_text
from ..store.state import UNSET, peek
from . import learned_reads, llm_internals
from .guard import describe
from .learned_reads import Method

if TYPE_CHECKING:
    from ..core.prepare import One

__all__ = ["AsyncAttachment", "to_async"]


class AsyncAttachment:
    """An ``llm.Attachment`` whose reads are awaitable, as ``AsyncResponse`` is to ``Response``.

    Same fields (``type``, ``path``, ``url``, ``content``) and same results as
    llm's sync methods, without blocking: URLs are fetched with httpx2 and files
    read on worker threads, under the limits of the active [`Config`][]. It is
    a view of an ``llm.Attachment``: both share one cache, so what is awaited
    here makes the sync attachment's reads free too, and the other way round.

    Construct it like ``llm.Attachment`` or from one with [`to_async`][].
    """

    __slots__ = ("_attachment",)

    def __init__(
        self,
        type: str | None = None,
        path: str | None = None,
        url: str | None = None,
        content: bytes | None = None,
        _id: str | None = None,
    ) -> None:
        self._attachment = llm_internals.new_attachment(type, path, url, content, _id)

    @classmethod
    def _wrapping(cls, attachment: llm.Attachment) -> AsyncAttachment:
        view = cls.__new__(cls)
        view._attachment = attachment
        return view

    @property
    def type(self) -> str | None:
        """The declared MIME type, or ``None``: await [`resolve_type`][] for the real one."""
        return self._attachment.type

    @property
    def path(self) -> str | None:
        """The local file path, if this is a path attachment."""
        return self._attachment.path

    @property
    def url(self) -> str | None:
        """The URL, if this is a URL attachment."""
        return self._attachment.url

    @property
    def content(self) -> bytes | None:
        """The bytes given at construction (never the fetched ones: await [`content_bytes`][])."""
        return self._attachment.content

    async def resolve_type(self) -> str | None:
        """The MIME type: declared, sniffed from bytes or file, or from the server.

        Server types are normalised (``Text/Plain; charset=UTF-8`` ->
        ``text/plain``); types of paths and bytes equal llm's.
        """
        attachment = self._attachment
        if attachment.type:
            return attachment.type
        if not (attachment.path or attachment.url):
            sniffed: str | None = attachment.resolve_type()  # type: ignore[no-untyped-call]
            return sniffed  # bytes: puremagic, no I/O
        state = (await _prepare(attachment, need_content=False)).state
        return None if state.type is UNSET else state.type

    async def content_bytes(self) -> bytes:
        """The bytes: as given, or read from the file or URL (once; cached)."""
        attachment = self._attachment
        _saw(attachment, "content")
        if attachment.content or not (attachment.path or attachment.url):
            return attachment.content or b""
        state = peek(attachment)
        content = state.content if state is not None else None
        if content is None:
            content = (await _prepare(attachment, need_content=True)).content
        assert content is not None
        return content

    async def base64_content(self) -> str:
        """The bytes as base64 text; large content is encoded once, off the event loop."""
        _saw(self._attachment, "base64")
        content = await self.content_bytes()
        state = peek(self._attachment)
        if state is not None and state.base64 is not None:
            return state.base64
        return await base64_text(content)

    async def id(self) -> str:
        """llm's id: a hash of the bytes, or of the URL for URL attachments."""
        attachment = self._attachment
        if (
            llm_internals.attachment_id(attachment) is None
            and not attachment.content
            and attachment.path
        ):
            state = peek(attachment)
            if state is None or state.id is None:
                await _prepare(attachment, need_content=True)
        hashed: str = attachment.id()  # type: ignore[no-untyped-call]
        return hashed

    async def to_sync(self, *, content: bool = True) -> llm.Attachment:
        """The plain ``llm.Attachment``, prepared so its sync reads do no I/O.

        With ``content=False`` only the type (and ``id()``) is prepared: for a
        URL that a model takes as a URL, ``content_bytes()`` would then still
        need to download.
        """
        await _prepare(self._attachment, need_content=content)
        return self._attachment

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncAttachment):
            return self._attachment == other._attachment
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like llm.Attachment

    def __repr__(self) -> str:
        return f"<AsyncAttachment {describe(self._attachment)}>"


async def _prepare(attachment: llm.Attachment, *, need_content: bool) -> One:
    # prepare (and all it imports) loads on first use: llm's plugin loading imports this
    # module for every llm command.
    from ..config import get_config
    from ..core.prepare import prepare_one

    return await prepare_one(attachment, need_content=need_content, config=get_config())


def _saw(attachment: llm.Attachment, method: Method) -> None:
    """Tell the execution watching reads, if any, that its model read this."""
    execution = learned_reads.current()
    if execution is not None:
        execution.saw(attachment, method)


def to_async(attachment: llm.Attachment | AsyncAttachment) -> AsyncAttachment:
    """The [`AsyncAttachment`][] view of ``attachment``, sharing its cache."""
    if isinstance(attachment, AsyncAttachment):
        return attachment
    return AsyncAttachment._wrapping(attachment)
