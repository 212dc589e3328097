"""The response-body decoder, driven with real gzip and zlib data: bounded, strict, whole."""

from __future__ import annotations

import gzip
import random
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_async_attachments.caps import Budget, Meter
from llm_async_attachments.errors import AttachmentFetchError, AttachmentTooLarge
from llm_async_attachments.http.decoding import MAX_PIECE, Decoder

SOURCE = "https://example.com/body"
KiB = 1024
MiB = 1024 * KiB
UNLIMITED = 1 << 40


def deflate(data: bytes, wbits: int, level: int = 9) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, wbits)
    return compressor.compress(data) + compressor.flush()


def zlib_stream(data: bytes) -> bytes:
    return deflate(data, zlib.MAX_WBITS)


def raw_deflate(data: bytes) -> bytes:
    return deflate(data, -zlib.MAX_WBITS)


def chunks(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def decode(
    encoding: str | None,
    pieces: Iterable[bytes],
    room: Callable[[], int] = lambda: UNLIMITED,
    raw_limit: int = UNLIMITED,
) -> bytes:
    decoder = Decoder(encoding, SOURCE, room, raw_limit)
    out = [piece for chunk in pieces for piece in decoder.feed(chunk)]
    out.extend(decoder.end())
    return b"".join(out)


def metered(encoding: str | None, pieces: Iterable[bytes], meter: Meter, raw_limit: int) -> None:
    """What the fetch code does: every piece charged to a real meter, the room read from it."""
    decoder = Decoder(encoding, SOURCE, lambda: meter.room + 1, raw_limit)
    for chunk in pieces:
        for piece in decoder.feed(chunk):
            meter.add(len(piece))
    for piece in decoder.end():
        meter.add(len(piece))


def old_decoded_loop(body: bytes, room: int) -> bytes:
    """The loop of ``fetch._decoded`` for ``deflate`` as it was at 7738e72, minus httpx."""
    decoder = zlib.decompressobj(zlib.MAX_WBITS)
    first = True
    out = []
    for chunk in [body]:
        if first and chunk[:1] and chunk[0] & 0x0F != 8:
            decoder = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, no zlib header
        first = False
        pending = chunk
        while pending:
            piece = decoder.decompress(pending, max(1, min(256 * KiB, room)))
            pending = decoder.unconsumed_tail
            if piece:
                out.append(piece)
    return b"".join(out)


def text(size: int, seed: int = 7) -> bytes:
    """Compressible but not trivial bytes."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randrange(1, 9)) for _ in range(64)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


# -- What is accepted -------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 3, 64 * KiB])
def test_concatenated_gzip_members_are_read_whole(size):
    parts = [text(5000, seed=1), b"", text(70000, seed=2), b"x"]
    body = b"".join(gzip.compress(part) for part in parts)
    assert decode("gzip", chunks(body, size)) == b"".join(parts)


def test_zero_bytes_after_a_gzip_member_are_skipped_as_gzip_does():
    body = gzip.compress(b"one") + b"\0" * 1000 + gzip.compress(b"two") + b"\0" * 3
    assert gzip.decompress(body) == b"onetwo"
    assert decode("gzip", chunks(body, 7)) == b"onetwo"


@pytest.mark.parametrize("encoding", [None, "", "identity", "gzip", "x-gzip", "deflate"])
def test_an_empty_body_is_an_empty_attachment_whatever_its_encoding(encoding):
    assert decode(encoding, []) == b""
    assert decode(encoding, [b""]) == b""


@pytest.mark.parametrize(
    ("header", "compress"),
    [
        (" GZIP ", gzip.compress),
        ("x-gzip", gzip.compress),
        ("Deflate", zlib_stream),
        ("identity, gzip", gzip.compress),
        ("identity", lambda data: data),
    ],
)
def test_encoding_names_are_read_as_http_spells_them(header, compress):
    assert decode(header, [compress(b"hello")]) == b"hello"


def test_raw_deflate_whose_first_byte_looks_like_zlib_is_read_as_raw():
    # A stored block, not final, whose ignored padding bits make its first byte 0x08:
    # the old sniff (low nibble 8) took it for a zlib header. Its 16-bit check fails.
    data = b"hello"
    body = b"\x08" + struct.pack("<HH", len(data), len(data) ^ 0xFFFF) + data + b"\x03\x00"
    assert zlib.decompress(body, -zlib.MAX_WBITS) == data
    assert (body[0] << 8 | body[1]) % 31 != 0
    assert decode("deflate", [body]) == data
    assert decode("deflate", chunks(body, 1)) == data


# -- The lost tail ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("piece", "size"), [(1024, 3 * 1024 + 1), (4096, 4096 + 3), (64 * KiB, 64 * KiB + 1)]
)
def test_raw_deflate_tail_is_kept_when_output_fills_the_piece_as_input_runs_out(piece, size):
    # zlib takes the last input bytes while the output buffer is exactly full,
    # and keeps the rest of a long match pending: the old loop stopped there.
    data = b"\0" * size
    body = raw_deflate(data)
    assert len(old_decoded_loop(body, piece)) < size  # the bug, on today's logic
    decoder = Decoder("deflate", SOURCE, lambda: piece, UNLIMITED)
    fed = list(decoder.feed(body))
    assert b"".join(fed) == data  # drained while feeding, not only at the end
    assert all(len(p) <= piece for p in fed)
    assert list(decoder.end()) == []


@pytest.mark.parametrize("compress", [raw_deflate, zlib_stream], ids=["raw", "zlib"])
@pytest.mark.parametrize("piece", [1, 1000, 4096, 64 * KiB])
@pytest.mark.parametrize("multiple", [1, 2, 5])
def test_deflate_output_an_exact_multiple_of_the_piece_size_is_decoded_completely(
    compress, piece, multiple
):
    data = text(piece * multiple)
    for size in (3, 4096, len(data)):
        assert decode("deflate", chunks(compress(data), size), lambda: piece) == data
    zeros = b"\0" * (piece * multiple)
    assert decode("deflate", [compress(zeros)], lambda: piece) == zeros


# -- What is refused --------------------------------------------------------------------


@pytest.mark.parametrize("header", ["br", "zstd", "compress", "gzip, gzip", "deflate, gzip"])
def test_unsupported_or_stacked_encodings_are_refused_before_any_byte(header):
    with pytest.raises(AttachmentFetchError, match="not supported") as caught:
        Decoder(header, SOURCE, lambda: UNLIMITED, UNLIMITED)
    assert caught.value.source == SOURCE
    assert f"Attachment {SOURCE} was sent with Content-Encoding {header!r}" in str(caught.value)


@pytest.mark.parametrize(
    "garbage", [b"<html>", b"\x1f", b"\x1f\x00", b"\0\0\x1fx", b"\x8b\x1f" + gzip.compress(b"")]
)
@pytest.mark.parametrize("size", [1, 64 * KiB])
def test_data_after_the_last_gzip_member_is_refused(garbage, size):
    body = gzip.compress(b"first") + garbage
    with pytest.raises(AttachmentFetchError) as caught:
        decode("gzip", chunks(body, size))
    message = str(caught.value)
    if garbage == b"\x1f":  # could be the start of a member: it ended there
        assert "truncated gzip body" in message
    else:
        assert "data after the end of its gzip stream" in message
    assert caught.value.source == SOURCE
    assert "use another URL" in message


@pytest.mark.parametrize("compress", [raw_deflate, zlib_stream], ids=["raw", "zlib"])
@pytest.mark.parametrize("size", [1, 64 * KiB])
def test_data_after_the_end_of_a_deflate_stream_is_refused(compress, size):
    body = compress(b"payload") + b"extra"
    with pytest.raises(AttachmentFetchError, match="data after the end of its deflate stream"):
        decode("deflate", chunks(body, size))
    decoder = Decoder("deflate", SOURCE, lambda: UNLIMITED, UNLIMITED)
    assert b"".join(decoder.feed(compress(b"payload"))) == b"payload"
    with pytest.raises(AttachmentFetchError, match="data after the end"):
        list(decoder.feed(b"x"))  # in a later chunk too


def test_a_body_labelled_gzip_that_is_not_gzip_is_refused():
    with pytest.raises(AttachmentFetchError, match="is not gzip data") as caught:
        decode("gzip", [b"plain text, not compressed"])
    assert str(caught.value).startswith(f"Attachment {SOURCE} was sent with Content-Encoding")


def cut_points(body: bytes) -> list[int]:
    """Inside the header, the deflate data and each field of the 8-byte trailer."""
    return [1, 2, 9, 10, len(body) // 2, len(body) - 8, len(body) - 5, len(body) - 4, len(body) - 1]


@pytest.mark.parametrize("size", [1, 3, 64 * KiB])
def test_a_truncated_gzip_body_is_refused_wherever_it_is_cut(size):
    data = text(20000)
    body = gzip.compress(data)
    for cut in cut_points(body):
        with pytest.raises(AttachmentFetchError, match="truncated gzip body") as caught:
            decode("gzip", chunks(body[:cut], size))
        assert f"ended after {cut} bytes" in str(caught.value)
        assert "try again" in str(caught.value)
    second = gzip.compress(b"tail")
    for cut in (1, 5, len(second) - 1):
        with pytest.raises(AttachmentFetchError, match="truncated gzip body"):
            decode("gzip", chunks(body + second[:cut], size))


@pytest.mark.parametrize("compress", [raw_deflate, zlib_stream], ids=["raw", "zlib"])
def test_a_truncated_deflate_body_is_refused(compress):
    body = compress(text(20000))
    for cut in (1, 2, len(body) // 2, len(body) - 1):
        with pytest.raises(AttachmentFetchError, match="truncated deflate body"):
            decode("deflate", chunks(body[:cut], 5))


@pytest.mark.parametrize("offset", [-8, -7, -5])  # the CRC-32 is the first 4 trailer bytes
def test_a_flipped_gzip_crc_byte_is_refused(offset):
    body = bytearray(gzip.compress(text(5000)))
    body[offset] ^= 0x01
    with pytest.raises(AttachmentFetchError, match="bad CRC-32") as caught:
        decode("gzip", [bytes(body)])
    assert caught.value.source == SOURCE


def test_a_wrong_gzip_size_trailer_is_refused():
    body = bytearray(gzip.compress(text(5000)))
    body[-4] ^= 0x01
    with pytest.raises(AttachmentFetchError, match="bad size in its gzip trailer"):
        decode("gzip", [bytes(body)])


def test_a_flipped_zlib_checksum_byte_is_refused():
    body = bytearray(zlib_stream(text(5000)))
    body[-1] ^= 0x01
    with pytest.raises(AttachmentFetchError, match="bad Adler-32"):
        decode("deflate", [bytes(body)])


def test_corrupt_deflate_data_is_refused_with_zlibs_reason():
    body = bytearray(gzip.compress(text(5000)))
    body[10] = 0xFF  # the first block header: a reserved block type
    with pytest.raises(AttachmentFetchError, match=r"damaged gzip body, corrupt data \(invalid"):
        decode("gzip", [bytes(body)])


# -- Bounds -----------------------------------------------------------------------------


def endless(chunk: bytes) -> Iterator[bytes]:
    while True:
        yield chunk


def prefixed(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


EMPTY_MEMBER = gzip.compress(b"")


def test_endless_zero_padding_stops_at_the_raw_limit_in_bounded_memory():
    cap = 512 * KiB
    meter = Budget(cap, cap).meter(SOURCE)
    first, padding = gzip.compress(b"x"), b"\0" * 64 * KiB
    tracemalloc.start()
    try:
        with pytest.raises(AttachmentTooLarge) as caught:
            metered("gzip", prefixed(first, endless(padding)), meter, cap)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    error = caught.value
    assert (error.limit, error.size, error.source) == (cap, None, SOURCE)
    assert "still compressed" in str(error)
    assert "raise LLM_ASYNC_ATTACHMENTS_MAX_BYTES" in str(error)
    assert peak < 128 * KiB  # two network chunks: nothing piles up after a member


def test_endless_empty_gzip_members_stop_within_the_first_chunk_in_bounded_memory():
    cap = 512 * KiB
    meter = Budget(cap, cap).meter(SOURCE)
    then = EMPTY_MEMBER * (64 * KiB // len(EMPTY_MEMBER))
    tracemalloc.start()
    try:
        with pytest.raises(AttachmentFetchError, match="more than one per KiB") as caught:
            metered("gzip", prefixed(EMPTY_MEMBER, endless(then)), meter, cap)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.source == SOURCE
    assert peak < cap  # the old decoder grew 50-95 MiB here


def test_endless_gzip_members_with_content_stop_at_the_cap_in_bounded_memory():
    member = gzip.compress(b"abc" * 2000)
    chunk = member * (64 * KiB // len(member))
    meter = Budget(MiB, MiB).meter(SOURCE)
    kept: list[bytes] = []
    decoder = Decoder("gzip", SOURCE, lambda: meter.room + 1, MiB)
    tracemalloc.start()
    try:
        with pytest.raises(AttachmentTooLarge, match="the size was not declared") as caught:
            for raw in endless(chunk):
                for piece in decoder.feed(raw):
                    meter.add(len(piece))
                    kept.append(piece)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.limit == MiB
    assert meter.count == MiB + 1  # one byte past the cap, then it stopped
    assert decoder.raw_bytes < MiB // 10
    assert peak < MiB + 256 * KiB  # the cap plus a small constant


def test_garbage_after_a_member_is_refused_at_once_not_read_to_the_limit():
    decoder = Decoder("gzip", SOURCE, lambda: UNLIMITED, MiB)
    first = gzip.compress(b"x") + b"A" * (64 * KiB)
    with pytest.raises(AttachmentFetchError, match="data after the end"):
        list(decoder.feed(first))
    assert decoder.raw_bytes == len(first)


def test_raw_bytes_count_against_the_raw_limit_even_when_they_decode_small():
    body = gzip.compress(random.Random(1).randbytes(100 * KiB))  # incompressible: grows
    with pytest.raises(AttachmentTooLarge, match="gzip body, still compressed, over") as caught:
        decode("gzip", chunks(body, 16 * KiB), raw_limit=100 * KiB)
    assert caught.value.limit == 100 * KiB


@pytest.mark.parametrize("compress", [gzip.compress, zlib_stream, raw_deflate])
def test_a_bomb_yields_pieces_never_bigger_than_the_room(compress):
    encoding = "deflate" if compress is not gzip.compress else "gzip"
    body = compress(b"\0" * 64 * MiB)
    assert len(body) < 100 * KiB
    cap = 3 * MiB + 12345
    meter = Budget(cap, cap).meter(SOURCE)
    asked: list[int] = []
    sizes: list[tuple[int, int]] = []

    def room() -> int:
        asked.append(meter.room + 1)
        return asked[-1]

    decoder = Decoder(encoding, SOURCE, room, MiB)
    with pytest.raises(AttachmentTooLarge, match="reading stopped after"):
        for raw in chunks(body, 16 * KiB):
            for piece in decoder.feed(raw):
                sizes.append((len(piece), asked[-1]))
                meter.add(len(piece))
    assert all(size <= min(MAX_PIECE, room) for size, room in sizes)
    assert meter.count == cap + 1  # stopped one byte past the cap, inside one piece


def test_identity_passes_chunks_through_and_counts_their_raw_bytes():
    decoder = Decoder(None, SOURCE, lambda: UNLIMITED, 10 * KiB)
    chunk = b"a" * 4 * KiB
    [piece] = decoder.feed(chunk)
    assert piece is chunk  # not a copy, when it fits the room
    assert decoder.raw_bytes == 4 * KiB
    small = Decoder("identity", SOURCE, lambda: 1000, 10 * KiB)
    assert [len(p) for p in small.feed(chunk)] == [1000, 1000, 1000, 1000, 96]
    list(decoder.feed(chunk))
    with pytest.raises(
        AttachmentTooLarge, match=r"after 12288 bytes, over the limit of 10 KiB per attachment\. If"
    ) as caught:
        decoder.feed(chunk)  # refused before any piece is taken
    assert (caught.value.limit, caught.value.size) == (10 * KiB, None)


def test_feeding_again_before_the_pieces_are_taken_is_a_programming_error():
    decoder = Decoder("gzip", SOURCE, lambda: UNLIMITED, UNLIMITED)
    decoder.feed(gzip.compress(b"x"))
    with pytest.raises(RuntimeError, match="before all the pieces"):
        decoder.end()


# -- The property -----------------------------------------------------------------------

ENCODINGS = ["identity", "gzip", "gzip members", "zlib", "raw deflate"]


def encode(data: bytes, how: str, level: int, cut: int) -> tuple[str | None, bytes]:
    if how == "identity":
        return None, data
    if how == "gzip":
        return "gzip", gzip.compress(data, level)
    if how == "gzip members":
        cut %= len(data) + 1
        return "x-gzip", gzip.compress(data[:cut], level) + gzip.compress(data[cut:], level)
    wbits = zlib.MAX_WBITS if how == "zlib" else -zlib.MAX_WBITS
    return "deflate", deflate(data, wbits, level)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=5000),
        st.builds(lambda n, b: b * n, st.integers(0, 40000), st.binary(min_size=1, max_size=3)),
    ),
    how=st.sampled_from(ENCODINGS),
    level=st.integers(0, 9),
    cut=st.integers(0, 1 << 16),
    sizes=st.lists(st.integers(1, 70000), min_size=1, max_size=8),
    rooms=st.lists(st.integers(1, 70000), min_size=1, max_size=8),
)
def test_decoding_inverts_encoding_for_any_chunking_and_room(data, how, level, cut, sizes, rooms):
    encoding, body = encode(data, how, level, cut)
    pieces, pos, i = [], 0, 0
    while pos < len(body):
        pieces.append(body[pos : pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    asked: list[int] = []

    def room() -> int:
        asked.append(rooms[len(asked) % len(rooms)])
        return asked[-1]

    decoder = Decoder(encoding, SOURCE, room, len(body))
    out = []
    for step in [*(lambda c=chunk: decoder.feed(c) for chunk in pieces), decoder.end]:
        for piece in step():
            assert 0 < len(piece) <= asked[-1]  # room() is asked before every piece
            out.append(piece)
    assert b"".join(out) == data
    assert decoder.raw_bytes == len(body)


def test_thousands_of_tiny_gzip_members_are_refused_before_they_hold_the_loop():
    member = gzip.compress(b"")
    decoder = Decoder("gzip", "http://files.test/many.gz", lambda: 1 << 20, 1 << 30)
    with pytest.raises(AttachmentFetchError, match="more than one per KiB"):
        for _ in decoder.feed(member * 3000):
            pass
    assert decoder._members <= 16 + len(member) * 3000 // 1024 + 1


def test_a_few_large_gzip_members_are_read_whole():
    parts = [bytes([n]) * 50_000 for n in range(40)]
    body = b"".join(gzip.compress(part) for part in parts)
    decoder = Decoder("gzip", "http://files.test/ok.gz", lambda: 1 << 20, 1 << 30)
    out = b"".join(decoder.feed(body)) + b"".join(decoder.end())
    assert out == b"".join(parts)
