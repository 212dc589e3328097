"""One attachment's requests: redirects, retries, and every response they open.

Each response is owned from the moment the transport returns it until it is
closed, and closed on every path by :func:`~.cancellation.close`, never by
httpx2 behind our back (``Response.aiter_raw()`` would close it at the end of
the body, in a task a cancellation can cut).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType

import httpx2

from .. import credentials
from ..credentials import Credential
from ..errors import TooManyRedirects
from .cancellation import CancelGate, close
from .pool import Pool, Shard
from .retries import RETRYABLE_STATUS, backoff, is_transient, retry_after
from .urls import redirect_target

__all__ = ["MAX_REDIRECTS", "REQUEST_HEADERS", "Exchange"]

MAX_REDIRECTS = 3  # llm's own limit for attachment URLs
# Sent with every request (and so what a kept response's Vary is checked against).
REQUEST_HEADERS: Mapping[str, str] = MappingProxyType(
    {"Accept-Encoding": "gzip, deflate", "User-Agent": "llm-async-attachments"}
)


class Exchange:
    """The requests made for one URL, within one deadline, on one pool.

    ``deadline`` is the loop time by which everything must be done: a retry
    whose wait would pass it is not made.
    """

    def __init__(
        self,
        url: httpx2.URL,
        source: str,
        pool: Pool,
        shard: Shard,
        gate: CancelGate,
        retries: int,
        deadline: float,
        credentials: tuple[Credential, ...] = (),
        netrc: str | None = None,
    ) -> None:
        self.url = url
        self.source = source
        self.requests = 0
        self._pool = pool
        self._shard = shard
        self._gate = gate
        self._retries = retries
        self._deadline = deadline
        self._userinfo = _basic_auth(url)
        self._netrc = netrc  # .netrc's Basic auth for this URL's host, if it is to be sent
        self._credentials = credentials

    @asynccontextmanager
    async def send(
        self, method: str, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[httpx2.Response]:
        """The final response after at most three redirects, its body not read yet.

        ``headers`` go with every request, redirects included, over our defaults;
        ``response.request`` is the request that got the final response.
        """
        url, visited = self.url, {str(self.url)}
        for hop in range(MAX_REDIRECTS + 1):
            response = await self._send_with_retries(method, url, headers)
            try:
                target = redirect_target(response, url, self.source)
            except BaseException:
                await close(response)
                raise
            if target is None:
                break
            await close(response)
            if hop == MAX_REDIRECTS:
                raise TooManyRedirects(
                    f"Attachment {self.source} redirected more than {MAX_REDIRECTS} times "
                    "(llm's own limit). Use the final URL directly.",
                    source=self.source,
                )
            if str(target) in visited:
                raise TooManyRedirects(
                    f"Attachment {self.source} redirects in a loop (back to "
                    f"{target}). The server is misconfigured; use another URL.",
                    source=self.source,
                )
            visited.add(str(target))
            if response.status_code == 303 and method != "HEAD":
                method = "GET"
            url = target
        try:
            yield response
        finally:
            await close(response)

    async def _send_with_retries(
        self, method: str, url: httpx2.URL, headers: Mapping[str, str] | None
    ) -> httpx2.Response:
        """Send one idempotent request, again after transient failures.

        Connection failures and 502/503/504 are retried up to ``retries``
        times, after ``Retry-After`` or a jittered exponential backoff,
        unless the wait would pass the deadline.
        """
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            self.requests += 1
            try:
                with self._gate.sending():
                    request = self._request(method, url, headers)
                    response = await self._pool.send(request, self._shard)
                    response.request = request  # what was sent, for Fetched.request_headers
            except httpx2.TransportError as error:
                delay = backoff(attempt)
                if last or not is_transient(error) or not self._room_for(delay):
                    raise
                await asyncio.sleep(delay)
                continue
            if response.status_code not in RETRYABLE_STATUS or last:
                return response
            after = retry_after(response)
            delay = backoff(attempt) if after is None else after
            if not self._room_for(delay):
                return response
            await close(response)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt always returns or raises")

    def _room_for(self, delay: float) -> bool:
        return delay < self._deadline - asyncio.get_running_loop().time()

    def _request(
        self, method: str, url: httpx2.URL, headers: Mapping[str, str] | None
    ) -> httpx2.Request:
        request = httpx2.Request(method, url, headers={**REQUEST_HEADERS, **(headers or {})})
        request.extensions["trace"] = self._gate.trace
        authorization = self._authorization(url)
        # Never in the clear through a proxy, which would read it on the way.
        if authorization and not (url.scheme == "http" and self._pool.proxied(url)):
            request.headers["Authorization"] = authorization
        return request

    def _authorization(self, url: httpx2.URL) -> str | None:
        """``Authorization`` for a request to ``url``: the URL's own user and password (as
        httpx2, and so llm, sends them), else the credential configured for ``url``'s
        origin, else ``.netrc``'s; the first and last only to the URL's own origin,
        never to a redirect's elsewhere."""
        home = _same_origin(url, self.url)
        if home and self._userinfo:
            return self._userinfo
        credential = credentials.for_url(self._credentials, str(url))
        if credential is not None:
            return credential.value
        return self._netrc if home else None


def _basic_auth(url: httpx2.URL) -> str | None:
    if not (url.username or url.password):
        return None
    pair = f"{url.username}:{url.password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _same_origin(one: httpx2.URL, other: httpx2.URL) -> bool:
    return (one.scheme, one.host, one.port) == (other.scheme, other.host, other.port)
