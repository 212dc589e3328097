"""Fetching one URL attachment: its type, and when asked its bytes, under every limit.

A fetch waits for a slot of its loop's pool (``Config.fetch_queue_timeout``),
then runs within ``Config.deadline`` in a task of its own
(:meth:`~.cancellation.CancelGate.run`). Every failure leaves here as an
:class:`~..errors.AttachmentError` naming the attachment: this is the one
place where httpx2's and the transport's exceptions become ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2

from .. import credentials, mime
from ..caps import Budget, Meter, Progress
from ..config import Config
from ..errors import (
    AttachmentAddressRefused,
    AttachmentFetchError,
    AttachmentHTTPStatusError,
    AttachmentQueueTimeout,
    AttachmentTimeout,
    UnsupportedAttachmentURL,
    redact,
)
from ..url_text import host_of
from .address_policy import AddressRefused
from .body import Body, sent_length
from .cancellation import CancelGate
from .exchange import Exchange
from .pool import NoSlot, UnusableProxy, pool_for_running_loop
from .urls import parse

__all__ = ["Fetched", "fetch_content", "fetch_type"]

HEAD_REFUSED = frozenset({403, 405, 501})
# A type some servers give every HEAD (a landing or login page) whatever the GET sends:
# never taken from a HEAD alone, but checked with the GET of the first bytes.
HEAD_SUSPECT = frozenset({"text/html"})
_SNIFF_LIMIT = 1024 * 1024  # a ranged GET for sniffing never reads more than this
# Never kept in Fetched.request_headers: credentials stay in the request that sent them.
_CREDENTIALS = frozenset({"authorization", "proxy-authorization", "cookie"})


@dataclass(frozen=True)
class Fetched:
    """What fetching one URL found. ``content`` is ``None`` when only the type was wanted.

    ``status`` is the final response's (a 2xx, or 304 when a conditional
    request's stored response still holds: then ``type`` and ``content`` are
    ``None``). ``headers`` are its headers as received (names lower-cased),
    ``request_headers`` those sent with the request that got it, ours and the
    conditional ones, but never ``Authorization`` or any other credential.
    """

    type: str | None
    content: bytes | None
    requests: int
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    request_headers: tuple[tuple[str, str], ...] = ()


async def fetch_type(url: str, config: Config) -> Fetched:
    """The MIME type of ``url``, by ``HEAD``.

    When ``HEAD`` is refused (403, 405, 501), never answered, names no
    usable type, or names ``text/html`` (which a mislabelling server gives
    every ``HEAD``), falls back to one ``GET`` of the first bytes (ranged):
    its type, or the type sniffed from those bytes, as llm would sniff the
    whole body.
    """
    return await _fetch(url, config, _type_of)


async def fetch_content(
    url: str,
    meter: Meter,
    config: Config,
    wanted: Callable[[str | None], bool] = lambda content_type: True,
    conditional: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> Fetched:
    """Type and bytes of ``url`` from a single streamed ``GET``.

    The type is the server's ``Content-Type`` or, when it gives none usable,
    sniffed from the body. If ``wanted(type)`` is false once the type is
    known, the body is not read and ``content`` is ``None``: one request
    decides both. Sizes are checked against ``meter`` on ``Content-Length``
    before the body and on every byte as it arrives.

    ``conditional`` headers (``If-None-Match``, ``If-Modified-Since``, from
    :func:`.caching.lookup`) go with the ``GET``; only then is a 304 an
    answer, with ``status`` 304 and no body read. Without them a 304 is an
    :class:`~..errors.AttachmentHTTPStatusError`, like any other non-2xx.
    ``progress`` is told of the body as it arrives.
    """
    return await _fetch(
        url, config, lambda exchange: _content_of(exchange, meter, wanted, conditional, progress)
    )


async def _fetch(
    url: str, config: Config, work: Callable[[Exchange], Coroutine[Any, Any, Fetched]]
) -> Fetched:
    source = redact(url)
    pool = await pool_for_running_loop(config)
    # The slot first: thousands of fetches started at once then queue here
    # after a few microseconds each, rather than parsing every URL on the loop
    # in one go before the first of them can start.
    try:
        async with pool.slot(host_of(url), config.fetch_queue_timeout) as shard:
            target = parse(url, source)
            with _as_attachment_errors(source, config):
                async with asyncio.timeout(config.deadline) as deadline:
                    when = deadline.when()
                    assert when is not None
                    gate = CancelGate()
                    exchange = Exchange(
                        target,
                        source,
                        pool,
                        shard,
                        gate,
                        config.retries,
                        when,
                        config.credentials,
                        await _netrc_for(url, config),
                    )
                    return await gate.run(work(exchange))
    except NoSlot:
        raise _queue_timeout(source, config) from None


async def _netrc_for(url: str, config: Config) -> str | None:
    """``.netrc``'s Basic auth for ``url``, read on a worker thread, when ``config.netrc``
    is on and no credential is configured for the URL's origin."""
    if not config.netrc or credentials.for_url(config.credentials, url) is not None:
        return None
    return await asyncio.to_thread(credentials.from_netrc, url)


def _queue_timeout(source: str, config: Config) -> AttachmentQueueTimeout:
    return AttachmentQueueTimeout(
        f"Attachment {source} waited {config.fetch_queue_timeout:g} s for a free fetch "
        f"slot and got none: this event loop already had {config.concurrency} fetches "
        f"running, or {config.host_concurrency} from its host. Its server was not "
        "contacted. Prepare fewer attachments at once, raise "
        "LLM_ASYNC_ATTACHMENTS_CONCURRENCY or LLM_ASYNC_ATTACHMENTS_HOST_CONCURRENCY, or "
        "wait longer with LLM_ASYNC_ATTACHMENTS_FETCH_QUEUE_TIMEOUT "
        "(Config.fetch_queue_timeout).",
        source=source,
    )


async def _type_of(exchange: Exchange) -> Fetched:
    try:
        async with exchange.send("HEAD") as response:
            if response.status_code not in HEAD_REFUSED:
                _check_status(response, exchange.source)
                declared = mime.normalise(response.headers.get("content-type"))
                if mime.usable(declared) and declared not in HEAD_SUSPECT:
                    return _result(exchange, declared, None, response)
    except httpx2.ReadTimeout:
        pass  # the server took the HEAD but never answered it; a GET may still work
    range_header = {"Range": f"bytes=0-{mime.SNIFF_BYTES - 1}"}
    async with exchange.send("GET", range_header) as response:
        _check_status(response, exchange.source)
        declared = mime.normalise(response.headers.get("content-type"))
        if mime.usable(declared) and declared not in HEAD_SUSPECT:
            return _result(exchange, declared, None, response)
        meter = Budget(_SNIFF_LIMIT, _SNIFF_LIMIT).meter(exchange.source)
        body = Body(response, meter, exchange.source)
        try:
            head = await body.read_until(mime.SNIFF_BYTES)
        finally:
            await body.aclose()
        return _result(exchange, mime.sniff(head) or declared, None, response)


async def _content_of(
    exchange: Exchange,
    meter: Meter,
    wanted: Callable[[str | None], bool],
    conditional: Mapping[str, str] | None,
    progress: Progress | None,
) -> Fetched:
    async with exchange.send("GET", conditional) as response:
        if conditional and response.status_code == 304:
            return _result(exchange, None, None, response)  # what is stored still holds
        _check_status(response, exchange.source)
        declared = mime.normalise(response.headers.get("content-type"))
        if mime.usable(declared) and not wanted(declared):
            return _result(exchange, declared, None, response)
        meter.declare(_content_length(response), "Content-Length")
        body = Body(response, meter, exchange.source, progress)
        try:
            if mime.usable(declared):
                return _result(exchange, declared, await body.read_all(), response)
            sniffed = mime.sniff(await body.read_until(mime.SNIFF_BYTES)) or declared
            if not wanted(sniffed):
                return _result(exchange, sniffed, None, response)
            content = await body.read_all()
            return _result(exchange, mime.sniff(content) or declared, content, response)
        finally:
            await body.aclose()


def _result(
    exchange: Exchange,
    content_type: str | None,
    content: bytes | None,
    response: httpx2.Response,
) -> Fetched:
    sent = response.request.headers.multi_items()
    return Fetched(
        content_type,
        content,
        exchange.requests,
        response.status_code,
        tuple(response.headers.multi_items()),
        tuple((name, value) for name, value in sent if name not in _CREDENTIALS),
    )


def _check_status(response: httpx2.Response, source: str) -> None:
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
        f"Attachment {source} could not be downloaded: HTTP {code} "
        f"{response.reason_phrase}. {hint}",
        source=source,
        status_code=code,
    )


def _content_length(response: httpx2.Response) -> int | None:
    if response.headers.get("content-encoding", "identity").lower() not in ("", "identity"):
        return None  # the length of the compressed body says nothing about the decoded one
    return sent_length(response)


@contextmanager
def _as_attachment_errors(source: str, config: Config) -> Iterator[None]:
    """Turn every failure below into an ``AttachmentError`` that names the attachment."""
    try:
        yield
    except TimeoutError:
        raise AttachmentTimeout(
            f"Attachment {source} took longer than the {config.deadline:g} s deadline for "
            "one attachment (the server is too slow). Try again later, or raise "
            "LLM_ASYNC_ATTACHMENTS_DEADLINE (Config.deadline).",
            source=source,
        ) from None
    except AddressRefused as refused:
        raise AttachmentAddressRefused(
            f"Attachment {source} was refused: {refused}, and LLM_ASYNC_ATTACHMENTS_"
            "BLOCK_PRIVATE (Config.block_private) is on. If you trust this host, add "
            "it to LLM_ASYNC_ATTACHMENTS_ALLOW (Config.allow).",
            source=source,
            address=refused.address,
            kind=refused.kind,
        ) from None
    except httpx2.TimeoutException as error:
        raise AttachmentTimeout(
            f"Attachment {source} timed out: no progress for {config.timeout:g} s "
            f"({type(error).__name__}). Check that the server is up, or raise "
            "LLM_ASYNC_ATTACHMENTS_TIMEOUT (Config.timeout).",
            source=source,
        ) from error
    except UnusableProxy as error:
        raise AttachmentFetchError(
            f"Attachment {source} could not be downloaded: {error} (from the "
            "HTTP_PROXY/HTTPS_PROXY/ALL_PROXY environment variables). Fix or unset the "
            "variable, or exempt the host with NO_PROXY.",
            source=source,
        ) from None
    except UnicodeError as error:
        # The resolver's IDNA codec refusing a host name httpx2 let through.
        raise UnsupportedAttachmentURL(
            f"Attachment {source} has a host name that cannot be looked up: {error}. Fix the URL.",
            source=source,
        ) from None
    except httpx2.HTTPError as error:
        raise AttachmentFetchError(
            f"Attachment {source} could not be downloaded: "
            f"{type(error).__name__}: {str(error) or 'connection lost'}. Check the URL "
            "and that the server is reachable.",
            source=source,
        ) from error
