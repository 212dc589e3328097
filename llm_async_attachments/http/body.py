"""Reading a response body in steps, every byte charged to a meter as it arrives."""

from __future__ import annotations

import io
from collections.abc import AsyncIterable, AsyncIterator

import httpx2

from ..caps import Meter, Progress
from .decoding import Decoder

__all__ = ["Body", "sent_length"]


class Body:
    """A response's body, decoded in bounded pieces, read as far as it is wanted.

    The raw bytes come straight from the transport's stream, not from
    ``Response.aiter_raw()``: that closes the response itself at the end of
    the body, where a cancellation can cut the close (see
    :mod:`.cancellation`). The response is closed by whoever opened it.
    ``progress``, if given, is told of each network read once its bytes are
    charged.
    """

    def __init__(
        self,
        response: httpx2.Response,
        meter: Meter,
        source: str,
        progress: Progress | None = None,
    ) -> None:
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
        self._progress = progress
        self._length = sent_length(response) if progress is not None else None

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
        if self._progress is not None and not self._ended:
            self._progress(self._decoder.source, self._decoder.raw_bytes, self._length)


def sent_length(response: httpx2.Response) -> int | None:
    """The body's ``Content-Length``, in bytes as sent (compressed or not), if it says."""
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None
