"""PLACEHOLDER until the decoding branch lands: the old decoder behind the new interface."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator

from ..errors import AttachmentFetchError

_PIECE = 256 * 1024


class Decoder:
    def __init__(
        self, encoding: str | None, source: str, room: Callable[[], int], raw_limit: int
    ) -> None:
        encoding = (encoding or "identity").strip().lower()
        self._identity = encoding in ("", "identity")
        if not self._identity and encoding not in ("gzip", "x-gzip", "deflate"):
            raise AttachmentFetchError(
                f"Attachment {source} was sent with Content-Encoding {encoding!r}, which "
                "is not supported (only gzip and deflate). Ask the server for an "
                "uncompressed copy.",
                source=source,
            )
        self._encoding = encoding
        self._source = source
        self._room = room
        wbits = zlib.MAX_WBITS | 16 if encoding != "deflate" else zlib.MAX_WBITS
        self._decoder = zlib.decompressobj(wbits)
        self._first = True

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        if self._identity:
            yield chunk
            return
        if self._first and self._encoding == "deflate" and chunk[:1] and chunk[0] & 0x0F != 8:
            self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
        self._first = False
        pending = chunk
        while pending:
            try:
                piece = self._decoder.decompress(pending, max(1, min(_PIECE, self._room())))
            except zlib.error as error:
                raise AttachmentFetchError(
                    f"Attachment {self._source} has a corrupt {self._encoding} body: {error}. "
                    "The server sent bad data; try again or use another URL.",
                    source=self._source,
                ) from None
            pending = self._decoder.unconsumed_tail
            if piece:
                yield piece

    def end(self) -> Iterator[bytes]:
        return iter(())
