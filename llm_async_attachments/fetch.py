"""Fetching URL attachments with httpx: streaming, capped, redirect-checked.

Knows nothing of llm: it turns a URL into a MIME type and, when asked, its
bytes, under the limits of a :class:`~.config.Config` and a byte meter.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ssl
import threading
import weakref
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from . import mime
from .budget import Budget, Meter
from .config import Config
from .errors import (
    AttachmentFetchError,
    AttachmentHTTPStatusError,
    AttachmentTimeout,
    TooManyRedirects,
    UnsupportedAttachmentURL,
)

MAX_REDIRECTS = 3  # llm's own limit for attachment URLs
HEAD_REFUSED = frozenset({403, 405, 501})
_HEADERS = {"Accept-Encoding": "gzip, deflate", "User-Agent": "llm-async-attachments"}
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

    When ``HEAD`` is refused (403, 405, 501) or names no usable type, falls
    back to a ``GET`` of the first bytes (ranged) and sniffs them, as llm
    would sniff the whole body.
    """
    async with _Session(url, config) as session:
        async with session.send("HEAD") as response:
            if response.status_code not in HEAD_REFUSED:
                session.check_status(response)
                declared = mime.normalise(response.headers.get("content-type"))
                if mime.usable(declared):
                    return session.result(declared, None)
        range_header = {"Range": f"bytes=0-{mime.SNIFF_BYTES - 1}"}
        async with session.send("GET", range_header) as response:
            session.check_status(response)
            declared = mime.normalise(response.headers.get("content-type"))
            if mime.usable(declared):
                return session.result(declared, None)
            sniff_meter = Budget(_SNIFF_LIMIT, _SNIFF_LIMIT).meter(url)
            async with _Body(url, response, sniff_meter) as body:
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
        async with _Body(session.url, response, meter) as body:
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
        self.config = config
        self.requests = 0
        self._deadline = asyncio.timeout(config.deadline)
        self._client: httpx.AsyncClient | None = None
        self._slot: asyncio.Semaphore | None = None

    async def __aenter__(self) -> _Session:
        _check_url(self.url, self.url)
        pool = await _pool_for_running_loop(self.config.concurrency, self.config.timeout)
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
                f"Attachment {self.url} took longer than the {self.config.deadline:g} s "
                "deadline for one attachment (the server is too slow). Try again later, "
                "or raise LLM_ASYNC_ATTACHMENTS_DEADLINE (Config.deadline).",
                source=self.url,
            ) from None
        finally:
            self._slot.release()
        if isinstance(exc, httpx.TimeoutException):
            raise AttachmentTimeout(
                f"Attachment {self.url} timed out: no progress for "
                f"{self.config.timeout:g} s ({type(exc).__name__}). Check that the "
                "server is up, or raise LLM_ASYNC_ATTACHMENTS_TIMEOUT (Config.timeout).",
                source=self.url,
            ) from exc
        if isinstance(exc, httpx.HTTPError):
            raise AttachmentFetchError(
                f"Attachment {self.url} could not be downloaded: "
                f"{type(exc).__name__}: {str(exc) or 'connection lost'}. Check the URL "
                "and that the server is reachable.",
                source=self.url,
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
            self.requests += 1
            response = await self._client.send(request, stream=True)
            if not response.has_redirect_location:
                break
            await response.aclose()
            if hop == MAX_REDIRECTS:
                raise TooManyRedirects(
                    f"Attachment {self.url} redirected more than {MAX_REDIRECTS} times "
                    "(llm's own limit). Use the final URL directly.",
                    source=self.url,
                )
            request = response.next_request
            assert request is not None
            _check_url(str(request.url), self.url)
            if str(request.url) in visited:
                raise TooManyRedirects(
                    f"Attachment {self.url} redirects in a loop (back to "
                    f"{request.url}). The server is misconfigured; use another URL.",
                    source=self.url,
                )
            visited.add(str(request.url))
        try:
            yield response
        finally:
            await response.aclose()

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
            f"Attachment {self.url} could not be downloaded: HTTP {code} "
            f"{response.reason_phrase}. {hint}",
            source=self.url,
            status_code=code,
        )


class _Body:
    """A response body read in steps, every decoded byte charged to a meter."""

    def __init__(self, source: str, response: httpx.Response, meter: Meter) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._meter = meter
        self._stream = _decoded(response, source, lambda: meter.room + 1)

    async def __aenter__(self) -> _Body:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stream.aclose()

    async def read_until(self, size: int) -> bytes:
        """At least ``size`` bytes, or all there are if fewer."""
        while self._size < size:
            try:
                self._add(await anext(self._stream))
            except StopAsyncIteration:
                break
        return b"".join(self._chunks)

    async def read_all(self) -> bytes:
        async for chunk in self._stream:
            self._add(chunk)
        return b"".join(self._chunks)

    def _add(self, chunk: bytes) -> None:
        self._meter.add(len(chunk))
        self._chunks.append(chunk)
        self._size += len(chunk)


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


def _content_length(response: httpx.Response) -> int | None:
    if response.headers.get("content-encoding", "identity").lower() not in ("", "identity"):
        return None  # the length of the compressed body says nothing about the decoded one
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


def _check_url(url: str, source: str) -> None:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise UnsupportedAttachmentURL(
            f"Attachment URL {url!r} is not a valid URL: {error}. Fix the URL.",
            source=source,
        ) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        where = "" if url == source else f" (redirected to {url})"
        raise UnsupportedAttachmentURL(
            f"Attachment {source}{where} is not an http:// or https:// URL; only those "
            "are fetched. For a local file use path=, for data you hold use content=.",
            source=source,
        )


@dataclass
class _Pool:
    client: httpx.AsyncClient
    slots: asyncio.Semaphore
    closer: AsyncIterator[None]


@dataclass
class _LoopPools:
    making: asyncio.Lock
    pools: dict[tuple[int, float], _Pool]


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPools] = (
    weakref.WeakKeyDictionary()
)


async def _pool_for_running_loop(concurrency: int, idle_timeout: float) -> _Pool:
    """The connection pool of the running loop, made on first use.

    One client per loop (and per concurrency and timeout setting): an httpx
    client is bound to the loop its connections were made on and must never
    be used from another. When many fetches start at once, one makes the pool
    and the others wait for it.
    """
    loop = asyncio.get_running_loop()
    registry = _pools.get(loop)
    if registry is None:
        registry = _pools[loop] = _LoopPools(asyncio.Lock(), {})
    key = (concurrency, idle_timeout)
    if key not in registry.pools:
        async with registry.making:
            if key not in registry.pools:
                verify = await _ssl_context()
                limits = httpx.Limits(
                    max_connections=concurrency, max_keepalive_connections=concurrency
                )
                client = httpx.AsyncClient(
                    limits=limits,
                    headers=_HEADERS,
                    timeout=httpx.Timeout(idle_timeout),
                    verify=verify,
                )
                closer = _close_at_loop_shutdown(client)
                await anext(closer)
                registry.pools[key] = _Pool(client, asyncio.Semaphore(concurrency), closer)
    return registry.pools[key]


async def _ssl_context() -> ssl.SSLContext:
    """httpx's default TLS settings, built once per process on a worker thread.

    Loading the CA bundle takes 30-50 ms and httpx's transport imports
    httpcore, h11 and anyio on first connect (another 40 ms): done on the
    event loop, both would stall it.
    """
    return _ssl or await asyncio.to_thread(_first_use)


def _first_use() -> ssl.SSLContext:
    global _ssl
    with _ssl_lock:
        if _ssl is None:
            for module in _TRANSPORT_MODULES:
                with contextlib.suppress(ImportError):
                    importlib.import_module(module)
            _ssl = httpx.create_ssl_context()
        return _ssl


_ssl: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()
_TRANSPORT_MODULES = (
    "httpcore",
    "h11",
    "anyio",
    "anyio._backends._asyncio",
    "httpcore._backends.anyio",
)


async def _close_at_loop_shutdown(client: httpx.AsyncClient) -> AsyncIterator[None]:
    # A suspended async generator: the loop's shutdown_asyncgens(), which
    # asyncio.run() and asyncio.Runner call before closing the loop, resumes
    # it so the client closes its connections on the loop that made them.
    try:
        yield
    finally:
        await client.aclose()
