"""A transport over httpcore2's public connection pool, with a network backend of our choice.

``httpx2.AsyncHTTPTransport`` builds its ``httpcore2.AsyncConnectionPool``
itself and takes no network backend, which the address policy needs (every
address actually connected to is checked: ``address_policy.PolicyBackend``).
So the package's connections go through this transport instead: httpx2's
public transport interface over httpcore2's public pool, which it owns (its
connections are counted through it: ``pool.statistics()``).

httpcore2's errors become httpx2's of the same name, as httpx2's own
transport maps them, so the layers above see only httpx2's exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import contextmanager

import httpcore2
import httpx2

__all__ = ["PoolTransport"]


class PoolTransport(httpx2.AsyncBaseTransport):
    """Sends httpx2 requests through one ``httpcore2.AsyncConnectionPool``."""

    def __init__(self, pool: httpcore2.AsyncConnectionPool) -> None:
        self.pool = pool

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        assert isinstance(request.stream, httpx2.AsyncByteStream)
        url = request.url
        sent = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx2_errors(request):
            response = await self.pool.handle_async_request(sent)
        assert isinstance(response.stream, AsyncIterable)
        return httpx2.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream, request),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()


class _Body(httpx2.AsyncByteStream):
    """A response body from the pool, its errors as httpx2's."""

    def __init__(self, stream: AsyncIterable[bytes], request: httpx2.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx2_errors(self._request):
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        closing = getattr(self._stream, "aclose", None)
        if closing is not None:
            await closing()


@contextmanager
def _as_httpx2_errors(request: httpx2.Request) -> Iterator[None]:
    try:
        yield
    except Exception as error:
        twin = _twin(type(error))
        if twin is None:
            raise
        raise twin(str(error), request=request) from error


def _twin(cls: type[BaseException]) -> type[httpx2.TransportError] | None:
    """httpx2's exception named as ``cls`` (or its nearest httpcore2 ancestor) is."""
    for ancestor in cls.__mro__:
        if not ancestor.__module__.startswith("httpcore2"):
            continue
        twin = getattr(httpx2, ancestor.__name__, None)
        if isinstance(twin, type) and issubclass(twin, httpx2.TransportError):
            return twin
    return None
