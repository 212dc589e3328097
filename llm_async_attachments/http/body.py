"""Reading a response body in steps, every byte charged to a meter as it arrives."""

from __future__ import annotations

import io
from collections.abc import AsyncIterable, AsyncIterator

import httpx2

from ..caps import Meter
from .decoding import Decoder

__all__ = ["Body"]


class Body:
    """A response's body, decoded in bounded pieces, read as far as it is wanted.

    The raw bytes come straight from the transport's stream, not from
    ``Response.aiter_raw()``: that closes the response itself at the end of
    the body, where a cancellation can cut the close (see
    :mod:`.cancellation`). The response is closed by whoever opened it.
    """

    def __init__(self, response: httpx2.Response, meter: Meter, source: str) -> None:
        # BytesIO, not a list and b"".join: its getvalue() hands over its buffer
        # without a copy, where a join of 32 MiB would hold the loop ~20 ms.
        self._buffer = io.BytesIO()
        self._meter = meter
        self._decoder = Decoder(
            response.headers.get("content-encoding"),
            source,
            room=lambda: meter.room + 1,  # one past the cap, so the meter sees it passed
            raw_limit=meter.limit,
        )
        stream = response.stream
        assert isinstance(stream, AsyncIterable)
        self._raw: AsyncIterator[bytes] = aiter(stream)
        self._ended = False
        # A ranged answer (206) is a prefix: compressed, it stops mid-stream by design.
        self._check_end = response.status_code != 206

    async def read_until(self, size: int) -> bytes:
        """At least ``size`` bytes, or all there are if fewer."""
        while self._buffer.tell() < size and not self._ended:
            await self._step()
        return self._buffer.getvalue()

    async def read_all(self) -> bytes:
        while not self._ended:
            await self._step()
        return self._buffer.getvalue()

    async def aclose(self) -> None:
        closing = getattr(self._raw, "aclose", None)
        if closing is not None:
            await closing()

    async def _step(self) -> None:
        try:
            chunk = await anext(self._raw)
        except StopAsyncIteration:
            self._ended = True
            pieces = self._decoder.end() if self._check_end else iter(())
        else:
            pieces = self._decoder.feed(chunk)
        for piece in pieces:
            self._meter.add(len(piece))
            self._buffer.write(piece)
