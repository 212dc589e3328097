"""Fetching URL attachments with httpx: streaming, capped, redirect-checked.

Knows nothing of llm: it turns a URL into a MIME type and, when asked, its
bytes, under the limits of a :class:`~.config.Config` and a byte meter.
"""

from __future__ import annotations

import asyncio
import email.utils
import io
import random
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from . import mime
from .budget import Budget, Meter
from .client import pool_for_running_loop, reclaim_orphans
from .config import Config
from .errors import (
    AttachmentAddressRefused,
    AttachmentFetchError,
    AttachmentHTTPStatusError,
    AttachmentTimeout,
    TooManyRedirects,
    UnsupportedAttachmentURL,
    redact,
)
from .policy import AddressRefused

MAX_REDIRECTS = 3  # llm's own limit for attachment URLs
HEAD_REFUSED = frozenset({403, 405, 501})
_DECODE_CHUNK = 256 * 1024
_SNIFF_LIMIT = 1024 * 1024  # a ranged GET for sniffing never reads more than this


@dataclass(frozen=True)
class Fetched:
    """What fetching one URL found. ``content`` is ``None`` when only the type was wanted."""

    type: str | None
    content: bytes | None
    requests: int


async def fetch_type(url: str, config: Config) -> Fetched:
    """The MIME type of ``url``, by ``HEAD``.

    When ``HEAD`` is refused (403, 405, 501), times out, or names no usable
    type, falls back to a ``GET`` of the first bytes (ranged) and sniffs them,
    as llm would sniff the whole body.
    """
    async with _Session(url, config) as session:
        try:
            async with session.send("HEAD") as response:
                if response.status_code not in HEAD_REFUSED:
                    session.check_status(response)
                    declared = mime.normalise(response.headers.get("content-type"))
                    if mime.usable(declared):
                        return session.result(declared, None)
        except httpx.TimeoutException:
            pass  # some servers never answer HEAD; GET may still work
        range_header = {"Range": f"bytes=0-{mime.SNIFF_BYTES - 1}"}
        async with session.send("GET", range_header) as response:
            session.check_status(response)
            declared = mime.normalise(response.headers.get("content-type"))
            if mime.usable(declared):
                return session.result(declared, None)
            sniff_meter = Budget(_SNIFF_LIMIT, _SNIFF_LIMIT).meter(session.label)
            async with _Body(session.label, response, sniff_meter) as body:
                head = await body.read_until(mime.SNIFF_BYTES)
            return session.result(mime.sniff(head) or declared, None)


async def fetch_content(
    url: str,
    meter: Meter,
    config: Config,
    wanted: Callable[[str | None], bool] = lambda content_type: True,
) -> Fetched:
    """Type and bytes of ``url`` from a single streamed ``GET``.

    The type is the server's ``Content-Type`` or, when it gives none usable,
    sniffed from the body. If ``wanted(type)`` is false once the type is
    known, the body is not read and ``content`` is ``None``: one request
    decides both. Sizes are checked against ``meter`` on ``Content-Length``
    before the body and on decoded bytes as they arrive.
    """
    async with _Session(url, config) as session, session.send("GET") as response:
        session.check_status(response)
        declared = mime.normalise(response.headers.get("content-type"))
        if mime.usable(declared) and not wanted(declared):
            return session.result(declared, None)
        meter.declare(_content_length(response), "Content-Length")
        async with _Body(session.label, response, meter) as body:
            if mime.usable(declared):
                return session.result(declared, await body.read_all())
            sniffed = mime.sniff(await body.read_until(mime.SNIFF_BYTES)) or declared
            if not wanted(sniffed):
                return session.result(sniffed, None)
            content = await body.read_all()
            return session.result(mime.sniff(content) or declared, content)


class _Session:
    """One attachment's fetch: URL checks, redirects, deadline and error mapping."""

    def __init__(self, url: str, config: Config) -> None:
        self.url = url
        self.label = redact(url)
        self.config = config
        self.requests = 0
        self._deadline = asyncio.timeout(config.deadline)
        self._client: httpx.AsyncClient | None = None
        self._slot: asyncio.Semaphore | None = None

    async def __aenter__(self) -> _Session:
        _check_url(self.url, self.label)
        pool = await pool_for_running_loop(self.config)
        await reclaim_orphans(pool)
        self._client, self._slot = pool.client, pool.slots
        await self._slot.acquire()
        await self._deadline.__aenter__()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        assert self._slot is not None
        try:
            await self._deadline.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            raise AttachmentTimeout(
                f"Attachment {self.label} took longer than the {self.config.deadline:g} s "
                "deadline for one attachment (the server is too slow). Try again later, "
                "or raise LLM_ASYNC_ATTACHMENTS_DEADLINE (Config.deadline).",
                source=self.label,
            ) from None
        finally:
            self._slot.release()
        if isinstance(exc, AddressRefused):
            raise AttachmentAddressRefused(
                f"Attachment {self.label} was refused: {exc}, and LLM_ASYNC_ATTACHMENTS_"
                "BLOCK_PRIVATE (Config.block_private) is on. If you trust this host, add "
                "it to LLM_ASYNC_ATTACHMENTS_ALLOW (Config.allow).",
                source=self.label,
                address=exc.address,
                kind=exc.kind,
            ) from None
        if isinstance(exc, httpx.TimeoutException):
            raise AttachmentTimeout(
                f"Attachment {self.label} timed out: no progress for "
                f"{self.config.timeout:g} s ({type(exc).__name__}). Check that the "
                "server is up, or raise LLM_ASYNC_ATTACHMENTS_TIMEOUT (Config.timeout).",
                source=self.label,
            ) from exc
        if isinstance(exc, httpx.HTTPError):
            raise AttachmentFetchError(
                f"Attachment {self.label} could not be downloaded: "
                f"{type(exc).__name__}: {str(exc) or 'connection lost'}. Check the URL "
                "and that the server is reachable.",
                source=self.label,
            ) from exc

    def result(self, content_type: str | None, content: bytes | None) -> Fetched:
        return Fetched(content_type, content, self.requests)

    @asynccontextmanager
    async def send(
        self, method: str, headers: dict[str, str] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """The final response after at most three redirects, body not yet read."""
        assert self._client is not None
        request = self._client.build_request(method, self.url, headers=headers)
        visited = {str(request.url)}
        for hop in range(MAX_REDIRECTS + 1):
            response = await self._send_with_retries(request)
            if not response.has_redirect_location:
                break
            await _close(response)
            if hop == MAX_REDIRECTS:
                raise TooManyRedirects(
                    f"Attachment {self.label} redirected more than {MAX_REDIRECTS} times "
                    "(llm's own limit). Use the final URL directly.",
                    source=self.label,
                )
            request = response.next_request
            assert request is not None
            _check_url(str(request.url), self.label)
            if str(request.url) in visited:
                raise TooManyRedirects(
                    f"Attachment {self.label} redirects in a loop (back to "
                    f"{request.url}). The server is misconfigured; use another URL.",
                    source=self.label,
                )
            visited.add(str(request.url))
        try:
            yield response
        finally:
            await _close(response)

    async def _send_with_retries(self, request: httpx.Request) -> httpx.Response:
        """Send one request (GET or HEAD: idempotent), retrying transient failures.

        Connection failures and 502/503/504 are retried up to
        ``Config.retries`` times, after a ``Retry-After`` delay or a capped,
        jittered exponential backoff, unless the wait would pass the deadline.
        """
        assert self._client is not None
        for attempt in range(self.config.retries + 1):
            self.requests += 1
            last = attempt == self.config.retries
            try:
                response = await self._client.send(request, stream=True)
            except _RETRYABLE_ERRORS:
                if last or not await self._pause(_backoff(attempt)):
                    raise
                continue
            if response.status_code not in _RETRYABLE_STATUS or last:
                return response
            delay = _retry_after(response) or _backoff(attempt)
            if not await self._pause(delay, before=response):
                return response
        raise AssertionError("unreachable")

    async def _pause(self, delay: float, before: httpx.Response | None = None) -> bool:
        """Wait ``delay`` seconds if the deadline leaves room; say whether it did."""
        remaining = self._deadline.when() - asyncio.get_running_loop().time()
        if delay >= remaining:
            return False
        if before is not None:
            await _close(before)
        await asyncio.sleep(delay)
        return True

    def check_status(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        code = response.status_code
        hint = (
            "The URL needs credentials or is not public; download it yourself and pass "
            "content= instead."
            if code in (401, 403, 407)
            else "Check the URL."
            if code < 500
            else "The server failed; try again later."
        )
        raise AttachmentHTTPStatusError(
            f"Attachment {self.label} could not be downloaded: HTTP {code} "
            f"{response.reason_phrase}. {hint}",
            source=self.label,
            status_code=code,
        )


class _Body:
    """A response body read in steps, every decoded byte charged to a meter."""

    def __init__(self, source: str, response: httpx.Response, meter: Meter) -> None:
        # BytesIO, not a list and b"".join: its getvalue() hands over its buffer
        # without a copy, where a join of 32 MiB would hold the loop ~20 ms.
        self._buffer = io.BytesIO()
        self._meter = meter
        self._stream = _decoded(response, source, lambda: meter.room + 1)

    async def __aenter__(self) -> _Body:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stream.aclose()

    async def read_until(self, size: int) -> bytes:
        """At least ``size`` bytes, or all there are if fewer."""
        while self._buffer.tell() < size:
            try:
                self._add(await anext(self._stream))
            except StopAsyncIteration:
                break
        return self._buffer.getvalue()

    async def read_all(self) -> bytes:
        async for chunk in self._stream:
            self._add(chunk)
        return self._buffer.getvalue()

    def _add(self, chunk: bytes) -> None:
        self._meter.add(len(chunk))
        self._buffer.write(chunk)


async def _decoded(
    response: httpx.Response, source: str, room: Callable[[], int]
) -> AsyncIterator[bytes]:
    """The body's bytes, decompressed in pieces no bigger than ``room()``.

    httpx would inflate a whole network read at once: 64 KiB of a gzip bomb
    becomes 64 MiB before any cap could look at it. Here each piece is at most
    ``room()`` bytes, so a cap stops a bomb within one small piece.
    """
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        async for chunk in response.aiter_raw():
            yield chunk
        return
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise AttachmentFetchError(
            f"Attachment {source} was sent with Content-Encoding {encoding!r}, which "
            "is not supported (only gzip and deflate). Ask the server for an "
            "uncompressed copy.",
            source=source,
        )
    wbits = zlib.MAX_WBITS | 16 if encoding != "deflate" else zlib.MAX_WBITS
    decoder = zlib.decompressobj(wbits)
    first = True
    async for chunk in response.aiter_raw():
        if first and encoding == "deflate" and chunk[:1] and chunk[0] & 0x0F != 8:
            decoder = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, no zlib header
        first = False
        pending = chunk
        while pending:
            try:
                piece = decoder.decompress(pending, max(1, min(_DECODE_CHUNK, room())))
            except zlib.error as error:
                raise AttachmentFetchError(
                    f"Attachment {source} has a corrupt {encoding} body: {error}. "
                    "The server sent bad data; try again or use another URL.",
                    source=source,
                ) from None
            pending = decoder.unconsumed_tail
            if piece:
                yield piece


# Host names after IDNA encoding, IPv4 and (unbracketed) IPv6 literals; empty is
# allowed here and refused below as "not an http(s) URL".
_HOST = re.compile(r"[A-Za-z0-9._:-]*")
_RETRYABLE_STATUS = frozenset({502, 503, 504})
# Failures before a response arrived; ReadTimeout is not among them: a server
# too slow to answer once is not helped by asking again.
_RETRYABLE_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)
_BACKOFF_BASE = 0.25
_BACKOFF_CAP = 4.0


def _backoff(attempt: int) -> float:
    """Full jitter: a random wait up to base * 2**attempt, capped."""
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), if the server sent one."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def _close(response: httpx.Response) -> None:
    """Close a response for certain, even if this task is cancelled again meanwhile.

    httpcore shields its clean-up with an anyio cancel scope, which asyncio's
    ``Task.cancel()`` goes through: a second cancellation during the close
    leaves the connection busy forever (encode/httpx#3782). The close runs
    as its own task here, and is waited for, however often we are cancelled;
    it is local work (no waiting on the server), so the wait is short.
    """
    closing = asyncio.ensure_future(response.aclose())
    cancelled = False
    while not closing.done():
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    closing.result()


def _content_length(response: httpx.Response) -> int | None:
    if response.headers.get("content-encoding", "identity").lower() not in ("", "identity"):
        return None  # the length of the compressed body says nothing about the decoded one
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


def _check_url(url: str, source: str) -> None:
    """Refuse what is not an absolute http(s) URL; ``source`` names the attachment."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise UnsupportedAttachmentURL(
            f"Attachment URL {redact(url)!r} is not a valid URL: {error}. Fix the URL.",
            source=source,
        ) from None
    if not _HOST.fullmatch(parsed.raw_host.decode("ascii", "replace")):
        raise UnsupportedAttachmentURL(
            f"Attachment URL {redact(url)!r} is not a valid URL: its host "
            f"{parsed.host!r} has characters no host name has. Fix the URL.",
            source=source,
        )
    if parsed.scheme not in ("http", "https") or not parsed.host:
        where = "" if redact(url) == source else f" (redirected to {redact(url)})"
        raise UnsupportedAttachmentURL(
            f"Attachment {source}{where} is not an http:// or https:// URL; only those "
            "are fetched. For a local file use path=, for data you hold use content=.",
            source=source,
        )
