"""Response bodies decoded in bounded pieces, strictly.

Knows nothing of httpx2 or llm: the fetch code feeds a :class:`Decoder` the raw
bytes of one response as they arrive and charges every piece it yields to a
meter. httpx2's own decoders inflate a whole network read at once (64 KiB of a
gzip bomb is 64 MiB before a cap can look), let bytes after a gzip member pile
up unread, and accept a body cut short; this one does none of that.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Generator, Iterator

from ..caps import _PER_ITEM_FIX, human
from ..errors import AttachmentFetchError, AttachmentTooLarge

__all__ = ["MAX_PIECE", "Decoder"]

MAX_PIECE = 256 * 1024
"""No piece is bigger, whatever the room: inflating one piece holds the event loop."""

# Input is handed to zlib in windows this size, so that what zlib copies on each
# call (its unconsumed tail, the data after a stream's end) stays small even
# when one network chunk holds thousands of tiny gzip members.
_WINDOW = 16 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
# Each gzip member costs ~10 us of CPU on the event loop however little it
# holds: a chunk of 64 KiB could hold 3,000 empty ones (30 ms). Real
# multi-member files have members of many KiB; past a few, one per KiB read
# or written is plenty.
_MEMBERS_FREE = 16
_BYTES_PER_MEMBER = 1024
_NOT_ZERO = re.compile(rb"[^\x00]")
_GZIP = 16 + zlib.MAX_WBITS
_ZLIB = zlib.MAX_WBITS
_RAW_DEFLATE = -zlib.MAX_WBITS


class Decoder:
    """Decodes one response body (identity, gzip or x-gzip, deflate as zlib or raw).

    Every byte counts against a cap: each decoded piece is at most
    ``max(1, room())`` bytes, ``room`` being read again before each piece
    (the caller charges each piece to a meter that raises at its limit), and
    the raw bytes fed may not pass ``raw_limit``, so neither a bomb nor an
    endless stream of padding, empty gzip members or trailer-less data gets
    past the cap. Nothing is held beyond the chunk being fed.

    Strict where httpx2 and llm are lenient, because a damaged attachment sent
    to a model is worse than an error: a truncated stream, a bad checksum, a
    body that is not what its ``Content-Encoding`` says, and data after the
    end of the compressed stream all raise :class:`AttachmentFetchError`.
    Concatenated gzip members (RFC 1952) are read whole, and zero bytes after
    a member are skipped, as ``gzip -d`` and Python's :mod:`gzip` do. An empty
    body is an empty attachment whatever its ``Content-Encoding``: servers
    label empty answers too.

    ``encoding`` is the ``Content-Encoding`` header as sent (``None`` when
    absent); an encoding this class cannot decode, or several stacked, raises
    at once. ``source`` names the attachment in messages. ``raw_limit`` is the
    per-attachment cap (``Config.max_bytes``), which the messages name.

    The ``encoding`` attribute then says what the body is decoded as
    (``identity``, ``gzip`` or ``deflate``), and ``raw_bytes`` how many raw
    bytes were fed so far.
    """

    def __init__(
        self, encoding: str | None, source: str, room: Callable[[], int], raw_limit: int
    ) -> None:
        self.source = source
        self.encoding = _coding(encoding, source)
        self.raw_bytes = 0
        self._room = room
        self._raw_limit = raw_limit
        self._inflater: zlib._Decompress | None = None
        self._head = b""  # the first byte of a stream or gzip member, until the second comes
        self._members = 0  # gzip members read to their end
        self._decoded = 0
        self._busy = False

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """The decoded pieces of ``chunk``, the next raw bytes of the body.

        The raw limit is checked here, before any decoding; the pieces come
        as the iterator is consumed, and it must be consumed to its end before
        the next ``feed`` or ``end``, or a piece of the body would be lost.
        """
        self._claim()
        self.raw_bytes += len(chunk)
        if self.raw_bytes > self._raw_limit:
            raise self._too_large()
        if self.encoding == "identity":
            return self._split(chunk)
        return self._inflate(memoryview(chunk))

    def end(self) -> Iterator[bytes]:
        """Whatever is left once the body has ended; raises if the stream is incomplete.

        Without it a body cut short by the server or the connection would
        pass for a whole one: only the end says whether the compressed stream
        reached its end marker (and, for gzip, its checksums).
        """
        self._claim()
        return self._finish()

    def _claim(self) -> None:
        if self._busy:
            raise RuntimeError(
                "Decoder.feed() or end() was called before all the pieces of the previous "
                "call were taken; take them all first, or part of the body is lost."
            )
        self._busy = True

    def _split(self, chunk: bytes) -> Iterator[bytes]:
        start = 0
        while start < len(chunk):
            size = self._piece_size()
            yield chunk[start : start + size]  # the chunk itself, uncopied, when it fits
            start += size
        self._busy = False

    def _inflate(self, view: memoryview) -> Iterator[bytes]:
        pos = 0
        while True:
            if self._inflater is None:
                pos = self._begin(view, pos)
                if self._inflater is None:
                    break
                if self._head:  # a first byte kept from the previous chunk
                    yield from self._pieces(self._head)
                    self._head = b""
            if pos == len(view):
                break
            if self._inflater.eof:  # only deflate gets here: gzip may start a new member
                raise self._trailing()
            window = view[pos : pos + _WINDOW]
            unused = yield from self._pieces(window)
            pos += len(window) - unused
            if self._inflater.eof and self.encoding == "gzip":
                self._members += 1
                self._inflater = None
                work = self.raw_bytes + self._decoded
                if self._members > _MEMBERS_FREE + work // _BYTES_PER_MEMBER:
                    raise self._too_many_members()
        self._busy = False

    def _begin(self, view: memoryview, pos: int) -> int:
        """Start an inflater once a stream's first two bytes tell what it is.

        Returns where in ``view`` to go on. Those two bytes are only looked at
        here; the inflater gets them with the rest.
        """
        if self.encoding == "gzip" and self._members and not self._head:
            found = _NOT_ZERO.search(view, pos)
            pos = found.start() if found else len(view)
        head = self._head + view[pos : pos + 2 - len(self._head)].tobytes()
        if len(head) < 2:
            self._head = head
            return len(view)
        if self.encoding == "gzip":
            if head != _GZIP_MAGIC:
                raise self._trailing() if self._members else self._not_gzip()
            wbits = _GZIP
        else:
            wbits = _ZLIB if _zlib_header(head[0], head[1]) else _RAW_DEFLATE
        self._inflater = zlib.decompressobj(wbits)
        return pos

    def _pieces(self, data: bytes | memoryview) -> Generator[bytes, None, int]:
        """All the inflater gives for ``data``, piece by piece; returns the bytes after its end.

        zlib can hold output back even once all input is taken (the rest of a
        long match), so it is asked again with no input until it gives nothing.
        Asking with ``flush()`` instead would have no size bound.
        """
        inflater = self._inflater
        assert inflater is not None
        while True:
            try:
                piece = inflater.decompress(data, self._piece_size())
            except zlib.error as error:
                raise self._corrupt(error) from None
            if piece:
                self._decoded += len(piece)
                yield piece
            if inflater.eof:
                return len(inflater.unused_data)
            data = inflater.unconsumed_tail
            if not piece and not data:
                return 0

    def _finish(self) -> Iterator[bytes]:
        if self._inflater is not None:
            yield from self._pieces(b"")
            if not self._inflater.eof:
                raise self._truncated()
        elif self._head:
            raise self._truncated()
        self._busy = False

    def _piece_size(self) -> int:
        return min(MAX_PIECE, max(1, self._room()))

    def _too_large(self) -> AttachmentTooLarge:
        plain = self.encoding == "identity"
        what = "" if plain else f" of its {self.encoding} body, still compressed"
        note = "" if plain else " (compressed bytes count too)"
        return AttachmentTooLarge(
            f"Attachment {self.source} is too large: reading stopped after {self.raw_bytes} "
            f"bytes{what}, over the limit of {human(self._raw_limit)} per attachment{note}. "
            f"{_PER_ITEM_FIX}",
            source=self.source,
            limit=self._raw_limit,
            size=None,
        )

    def _truncated(self) -> AttachmentFetchError:
        missing = (
            "its trailer, with the CRC-32 and the size, is missing or incomplete"
            if self.encoding == "gzip"
            else "the compressed stream never reached its end marker"
        )
        return self._error(
            f"has a truncated {self.encoding} body: it ended after {self.raw_bytes} bytes and "
            f"{missing}, so the data would be incomplete. The server or the connection cut "
            "it short; try again, or use another URL."
        )

    def _corrupt(self, error: zlib.error) -> AttachmentFetchError:
        detail = str(error).rpartition(": ")[2] or str(error)
        if "incorrect data check" in detail:
            check = "CRC-32" if self.encoding == "gzip" else "Adler-32"
            what = f"a bad {check}: the decoded bytes are not the ones that were compressed"
        elif "incorrect length check" in detail:
            what = "a bad size in its gzip trailer: the decoded size is not the one compressed"
        else:
            what = f"corrupt data ({detail})"
        return self._error(
            f"has a damaged {self.encoding} body, {what}. The server sent bad data or it "
            "was damaged on the way; try again, or use another URL."
        )

    def _trailing(self) -> AttachmentFetchError:
        what = (
            "that do not start another gzip member"
            if self.encoding == "gzip"
            else "past its end marker"
        )
        return self._error(
            f"has data after the end of its {self.encoding} stream (bytes {what}). The "
            "server sent a malformed body; ask for an uncompressed copy, or use another URL."
        )

    def _too_many_members(self) -> AttachmentFetchError:
        return self._error(
            f"has a gzip body of {self._members} members in its first {self.raw_bytes} "
            f"bytes ({self._decoded} decoded), more than one per KiB: no real file is "
            "compressed that way, and "
            "decoding so many would hold the event loop. Ask for an uncompressed copy, "
            "or use another URL."
        )

    def _not_gzip(self) -> AttachmentFetchError:
        return self._error(
            "was sent with Content-Encoding gzip, but its body is not gzip data (it does "
            "not start with the bytes 1f 8b). The server mislabelled it; ask for an "
            "uncompressed copy, or use another URL."
        )

    def _error(self, text: str) -> AttachmentFetchError:
        return AttachmentFetchError(f"Attachment {self.source} {text}", source=self.source)


def _coding(header: str | None, source: str) -> str:
    """The one encoding a ``Content-Encoding`` header names; ``identity`` for none."""
    named = [token.strip() for token in (header or "").lower().split(",")]
    named = [token for token in named if token not in ("", "identity")]
    if not named:
        return "identity"
    if len(named) == 1 and named[0] in ("gzip", "x-gzip", "deflate"):
        return "deflate" if named[0] == "deflate" else "gzip"
    stacked = " (several stacked)" if len(named) > 1 else ""
    sent = (header or "").strip()
    raise AttachmentFetchError(
        f"Attachment {source} was sent with Content-Encoding {sent!r}{stacked}, "
        "which is not supported (only one of gzip and deflate). Ask the server for an "
        "uncompressed copy.",
        source=source,
    )


def _zlib_header(b0: int, b1: int) -> bool:
    """Whether a deflate body starts with a zlib header (RFC 1950), not raw deflate.

    Servers send both under ``deflate``. A zlib header names deflate with a
    window of at most 32 KiB, and its 16 bits are a multiple of 31. Raw
    deflate starts that way only with a stored block whose padding bits are
    not zero, which no encoder writes, and then passes the check once in 31.
    """
    return b0 & 0x0F == 8 and b0 >> 4 <= 7 and (b0 << 8 | b1) % 31 == 0
