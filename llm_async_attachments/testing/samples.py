"""Tiny, valid sample files built with the standard library only.

Every sample is sniffed by ``puremagic.from_string(data, mime=True)`` as the
type listed in :data:`EXPECTED_MIME` (``None`` means puremagic raises
``PureError``). :func:`sized` pads a sample to a target size while keeping
both its validity and its sniffed type.

Note on text: puremagic cannot identify BOM-less UTF-8 text at all, and sniffs
UTF-8-with-BOM as ``""``. :func:`text` is therefore UTF-16-LE with a BOM, which
puremagic reports as ``text/plain``; :func:`text_utf8` and
:func:`text_utf8_bom` cover the other two cases.
"""

from __future__ import annotations

import io
import struct
import wave
import zlib
from collections.abc import Callable

__all__ = [
    "EXPECTED_MIME",
    "SAMPLES",
    "gif",
    "jpeg",
    "mp3",
    "pdf",
    "png",
    "sized",
    "text",
    "text_utf8",
    "text_utf8_bom",
    "unknown",
    "wav",
    "webp",
]

_TEXT = "Hello from llm-async-attachments.\nThe quick brown fox jumps over the lazy dog.\n"


# -- PNG ------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png(comment: bytes = b"") -> bytes:
    """1x1 red RGB PNG, optionally with a ``tEXt`` Comment chunk."""
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit, RGB
    idat = zlib.compress(b"\x00\xff\x00\x00")  # filter byte + one red pixel
    text_chunk = _png_chunk(b"tEXt", b"Comment\x00" + comment) if comment else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + text_chunk
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def png() -> bytes:
    """A 1x1 red PNG."""
    return _png()


def _sized_png(size: int) -> bytes:
    overhead = len(_png()) + 12 + len(b"Comment\x00")
    return _png(b"x" * (size - overhead)) if size > overhead else _png()


# -- JPEG -----------------------------------------------------------------


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _jpeg(comments: list[bytes] | None = None) -> bytes:
    """8x8 mid-grey baseline greyscale JPEG with minimal Huffman tables."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dqt = b"\x00" + b"\x01" * 64  # table 0, all-ones quantisation
    sof0 = struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00"  # 8x8, one component
    counts = b"\x01" + b"\x00" * 15  # a single 1-bit code ("0")
    dht_dc = b"\x00" + counts + b"\x00"  # DC table 0: symbol 0 (diff = 0)
    dht_ac = b"\x10" + counts + b"\x00"  # AC table 0: symbol 0x00 (EOB)
    sos = b"\x01\x01\x00\x00\x3f\x00"  # component 1 uses tables 0/0, Ss=0 Se=63
    scan = b"\x3f"  # bits "0" (DC diff 0) "0" (EOB), padded with ones
    return (
        b"\xff\xd8"
        + _segment(0xE0, app0)
        + b"".join(_segment(0xFE, c) for c in comments or [])
        + _segment(0xDB, dqt)
        + _segment(0xC0, sof0)
        + _segment(0xC4, dht_dc)
        + _segment(0xC4, dht_ac)
        + _segment(0xDA, sos)
        + scan
        + b"\xff\xd9"
    )


def jpeg() -> bytes:
    """An 8x8 grey baseline JPEG."""
    return _jpeg()


def _sized_jpeg(size: int) -> bytes:
    extra = size - len(_jpeg())
    comments: list[bytes] = []
    while extra >= 4:  # each COM segment costs 4 bytes + payload (<= 65533)
        payload = min(extra - 4, 65533)
        comments.append(b"x" * payload)
        extra -= payload + 4
    return _jpeg(comments)


# -- GIF ------------------------------------------------------------------


def _gif(comment: bytes = b"") -> bytes:
    """1x1 GIF89a (black pixel), optionally with a comment extension."""
    extension = b""
    if comment:
        blocks = [comment[i : i + 255] for i in range(0, len(comment), 255)]
        extension = b"\x21\xfe" + b"".join(bytes([len(b)]) + b for b in blocks) + b"\x00"
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0)  # 1x1, 2-entry global colour table
        + b"\x00\x00\x00\xff\xff\xff"
        + extension
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0)  # image descriptor
        + b"\x02\x02\x44\x01\x00"  # LZW min size 2: CLEAR, 0, EOI
        + b"\x3b"
    )


def gif() -> bytes:
    """A 1x1 GIF89a."""
    return _gif()


def _sized_gif(size: int) -> bytes:
    extra = size - len(_gif()) - 3  # 3 = introducer, label, terminator
    if extra < 2:
        return _gif()
    blocks = -(-extra // 256)  # each sub-block: 1 length byte + up to 255 bytes
    return _gif(b"x" * max(extra - blocks, 1))


# -- WebP -----------------------------------------------------------------

# 1x1 lossless (VP8L) bitstream, the one Modernizr uses for WebP detection.
_VP8L = bytes.fromhex("2f00000010071011118888fe07")


def _riff_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")


def _riff(form: bytes, chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + form + chunks


def webp() -> bytes:
    """A 1x1 lossless WebP (simple format)."""
    return _riff(b"WEBP", _riff_chunk(b"VP8L", _VP8L))


def _sized_webp(size: int) -> bytes:
    # Extended format: VP8X (alpha + XMP flags, 1x1 canvas), VP8L, then an XMP
    # chunk padded with whitespace (the usual XMP padding convention).
    vp8x = _riff_chunk(b"VP8X", b"\x14\x00\x00\x00" + b"\x00" * 6)
    image = vp8x + _riff_chunk(b"VP8L", _VP8L)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>\n'
    pad = size - len(_riff(b"WEBP", image)) - 8 - len(xmp)
    if pad < 0:
        return webp()
    return _riff(b"WEBP", image + _riff_chunk(b"XMP ", xmp + b" " * (pad - pad % 2)))


# -- PDF ------------------------------------------------------------------


def _pdf(padding: int = 0) -> bytes:
    """One-page 1x1 inch PDF; ``padding`` adds comment bytes to the content stream."""
    content = b"0.5 g 0 0 72 72 re f\n"
    if padding > 0:
        lines = [b"%" + b"x" * 71 + b"\n"] * (padding // 73)
        rest = padding % 73
        if rest:
            lines.append(b"%" + b"x" * (rest - 2) + b"\n" if rest >= 2 else b"\n")
        content += b"".join(lines)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def pdf() -> bytes:
    """A one-page PDF with a grey square."""
    return _pdf()


def _sized_pdf(size: int) -> bytes:
    padding = size - len(_pdf())
    if padding <= 0:
        return _pdf()
    data = _pdf(padding)
    for _ in range(3):  # digit counts shift slightly with the padding
        if len(data) == size:
            break
        padding += size - len(data)
        data = _pdf(padding)
    return data


# -- WAV ------------------------------------------------------------------


def _wav(frames: int) -> bytes:
    """8 kHz mono 16-bit PCM silence."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(b"\x00\x00" * frames)
    return buffer.getvalue()


def wav() -> bytes:
    """10 ms of 8 kHz mono 16-bit silence."""
    return _wav(80)


def _sized_wav(size: int) -> bytes:
    return _wav(max((size - 44) // 2, 80))


# -- MP3 ------------------------------------------------------------------

# MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, mono, no CRC: 417-byte frames.
_MP3_FRAME = b"\xff\xfb\x90\xc0" + b"\x00" * 413
_MP3_FRAMES = 3


def _synchsafe(value: int) -> bytes:
    return bytes((value >> shift) & 0x7F for shift in (21, 14, 7, 0))


def _mp3(frames: int = _MP3_FRAMES, tag_padding: int = 0) -> bytes:
    """ID3v2.4 tag (TIT2) followed by silent MPEG audio frames."""
    title = b"\x03sample"  # encoding 3 = UTF-8
    tit2 = b"TIT2" + _synchsafe(len(title)) + b"\x00\x00" + title
    tag_body = tit2 + b"\x00" * tag_padding
    tag = b"ID3\x04\x00\x00" + _synchsafe(len(tag_body)) + tag_body
    return tag + _MP3_FRAME * frames


def mp3() -> bytes:
    """An ID3v2.4-tagged MP3 of three silent frames."""
    return _mp3()


def _sized_mp3(size: int) -> bytes:
    header = len(_mp3(frames=0))
    frames = max((size - header) // len(_MP3_FRAME), _MP3_FRAMES)
    padding = max(size - header - frames * len(_MP3_FRAME), 0)
    return _mp3(frames, padding)


# -- text -----------------------------------------------------------------


def text() -> bytes:
    """UTF-16-LE text with a BOM (the only text puremagic sniffs as text/plain)."""
    return _TEXT.encode("utf-16")[:2] + _TEXT.encode("utf-16-le")


def text_utf8() -> bytes:
    """Plain UTF-8 text without a BOM (puremagic raises PureError)."""
    return _TEXT.encode()


def text_utf8_bom() -> bytes:
    """UTF-8 text with a BOM (puremagic sniffs the MIME type as "")."""
    return b"\xef\xbb\xbf" + _TEXT.encode()


def _repeat_text(prefix: bytes, encoded_line: bytes, size: int, unit: int = 1) -> bytes:
    body = encoded_line * (max(size - len(prefix), 0) // len(encoded_line) + 1)
    cut = max(size - len(prefix), len(encoded_line))
    return prefix + body[: cut - cut % unit]


def _sized_text(size: int) -> bytes:
    return _repeat_text(b"\xff\xfe", _TEXT.encode("utf-16-le"), size, unit=2)


def _sized_text_utf8(size: int) -> bytes:
    return _repeat_text(b"", _TEXT.encode(), size)


def _sized_text_utf8_bom(size: int) -> bytes:
    return _repeat_text(b"\xef\xbb\xbf", _TEXT.encode(), size)


# -- unknown --------------------------------------------------------------

_UNKNOWN_HEAD = b"\x13\x37llm-async-attachments: no known magic here\n"


def unknown() -> bytes:
    """Bytes that puremagic cannot identify (raises PureError)."""
    return _UNKNOWN_HEAD + bytes(range(1, 200))


def _sized_unknown(size: int) -> bytes:
    filler = bytes(range(1, 200))
    body = filler * (max(size - len(_UNKNOWN_HEAD), 0) // len(filler) + 1)
    return _UNKNOWN_HEAD + body[: max(size - len(_UNKNOWN_HEAD), len(filler))]


# -- registry -------------------------------------------------------------

SAMPLES: dict[str, bytes] = {
    "png": png(),
    "jpeg": jpeg(),
    "gif": gif(),
    "webp": webp(),
    "pdf": pdf(),
    "wav": wav(),
    "mp3": mp3(),
    "text": text(),
    "text_utf8": text_utf8(),
    "text_utf8_bom": text_utf8_bom(),
    "unknown": unknown(),
}
"""Sample name -> bytes."""

EXPECTED_MIME: dict[str, str | None] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "pdf": "application/pdf",
    "wav": "audio/wave",
    "mp3": "audio/mpeg",
    "text": "text/plain",
    "text_utf8": None,
    "text_utf8_bom": "",
    "unknown": None,
}
"""Sample name -> ``puremagic.from_string(data, mime=True)`` (``None``: PureError)."""

_SIZERS: dict[str, Callable[[int], bytes]] = {
    "png": _sized_png,
    "jpeg": _sized_jpeg,
    "gif": _sized_gif,
    "webp": _sized_webp,
    "pdf": _sized_pdf,
    "wav": _sized_wav,
    "mp3": _sized_mp3,
    "text": _sized_text,
    "text_utf8": _sized_text_utf8,
    "text_utf8_bom": _sized_text_utf8_bom,
    "unknown": _sized_unknown,
}


def sized(kind: str, size: int) -> bytes:
    """Sample ``kind`` padded to about ``size`` bytes, keeping its sniffed type.

    Never smaller than the base sample; usually exact (within a byte or two).
    """
    try:
        sizer = _SIZERS[kind]
    except KeyError:
        raise ValueError(
            f"unknown sample kind {kind!r}; expected one of {sorted(_SIZERS)}"
        ) from None
    return sizer(size)
