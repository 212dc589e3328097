from types import SimpleNamespace

import llm
import puremagic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_async_attachments import mime
from llm_async_attachments.core.plan import UrlPolicy
from llm_async_attachments.mime import (
    FALLBACK_SNIFF_BYTES,
    FOOT_BYTES,
    SNIFF_BYTES,
    matches,
    normalise,
    sniff,
    sniff_bytes,
    sniff_ends,
    usable,
)
from llm_async_attachments.testing import samples


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Text/Plain; charset=UTF-8", "text/plain"),
        ("image/PNG", "image/png"),
        ("  application/pdf ;x=y", "application/pdf"),
        ("audio/wave", "audio/wav"),
        ("", None),
        (None, None),
        ("garbage", None),
    ],
)
def test_normalise(header, expected):
    assert normalise(header) == expected


def test_octet_stream_is_not_a_usable_type():
    assert not usable("application/octet-stream")
    assert not usable(None)
    assert usable("image/png")


@pytest.mark.parametrize(
    ("content_type", "patterns", "expected"),
    [
        ("image/png", ["image/*"], True),
        ("image/png", ["image/png"], True),
        ("audio/wav", ["image/*", "application/pdf"], False),
        ("application/pdf", ["image/*", "application/pdf"], True),
        ("imagex/png", ["image/*"], False),
        ("text/plain", ["*/*"], True),
        (None, ["*/*"], False),
    ],
)
def test_matches(content_type, patterns, expected):
    assert matches(content_type, patterns) is expected


@pytest.mark.parametrize(
    ("declared", "png", "wav"),
    [
        (True, True, True),
        (False, False, False),
        (None, False, False),
        ("image/*", True, False),
        ({"image/*", "audio/wav"}, True, True),
    ],
)
def test_url_policy_reads_supports_attachment_urls(declared, png, wav):
    policy = UrlPolicy(declared)
    assert (policy.accepts("image/png"), policy.accepts("audio/wav")) == (png, wav)


def test_sniff_of_nothing_is_none():
    assert sniff(b"") is None


def test_the_sniffed_head_is_the_one_puremagic_reads():
    # puremagic.main.max_head is private: when a release drops it, the fallback is used.
    assert getattr(puremagic.main, "max_head", FALLBACK_SNIFF_BYTES) == SNIFF_BYTES
    assert SNIFF_BYTES <= FALLBACK_SNIFF_BYTES


@pytest.mark.parametrize(
    "module",
    [
        SimpleNamespace(),  # no puremagic.main
        SimpleNamespace(main=SimpleNamespace()),  # no max_head
        SimpleNamespace(main=SimpleNamespace(max_head=None)),
        SimpleNamespace(main=SimpleNamespace(max_head=0)),
        SimpleNamespace(main=SimpleNamespace(max_head="36870")),
    ],
)
def test_sniffing_reads_a_fixed_head_when_puremagic_does_not_say(module):
    assert sniff_bytes(module) == FALLBACK_SNIFF_BYTES
    assert sniff_bytes(SimpleNamespace(main=SimpleNamespace(max_head=100))) == 100


@pytest.mark.parametrize("kind", ["png", "jpeg", "gif", "pdf", "wav", "mp3"])
def test_the_head_alone_sniffs_as_the_whole_file(kind):
    # Why a type-only fetch reads SNIFF_BYTES and no more, whatever puremagic's version.
    data = samples.sized(kind, 3 * FALLBACK_SNIFF_BYTES)
    assert sniff(data[:SNIFF_BYTES]) == sniff(data) is not None


# Sniffing is puremagic's own answer: the index in mime.py only finds it faster.


def puremagics(data: bytes, filename: str | None = None) -> str | None:
    """What llm makes of puremagic's answer (no type for its PureError or its "")."""
    try:
        detected = puremagic.from_string(data, mime=True, filename=filename)
    except puremagic.PureError:
        return None
    return llm.utils.MIME_TYPE_FIXES.get(detected, detected) or None


Placement = tuple[int, bytes]  # an offset (from the end when negative) and the bytes there


def _signatures() -> list[tuple[tuple[Placement, ...], str]]:
    """Every signature of puremagic's tables, placed as a file holding it would: the
    headers, the footers, and each multi-part rule after each header it follows."""
    placed: list[tuple[tuple[Placement, ...], str]] = []
    for row in [*puremagic.main.magic_header_array, *puremagic.main.magic_footer_array]:
        placed.append((((row.offset, row.byte_match),), row.extension))
    for key, rows in puremagic.main.multi_part_dict.items():
        for first in puremagic.main.magic_header_array:
            if first.byte_match == key:
                for row in rows:
                    placements = ((first.offset, key), (row.offset, row.byte_match))
                    placed.append((placements, row.extension))
    return placed


def _ties() -> list[tuple[Placement, ...]]:
    """Pairs of header signatures that tie (same length, both fit) and rank by table order,
    where the table puts the one further into the file first."""
    rows = puremagic.main.magic_header_array
    return [
        ((first.offset, first.byte_match), (second.offset, second.byte_match))
        for index, first in enumerate(rows)
        for second in rows[index + 1 :]
        if len(first.byte_match) == len(second.byte_match)
        and first.offset >= second.offset + len(second.byte_match)
        and first.mime_type != second.mime_type
    ]


SIGNATURES = _signatures()
TIES = _ties()
EXTENSIONS = sorted({extension for _, extension in SIGNATURES} | {".tar.gz", ".gz", ".txt"})


def build(placements: tuple[Placement, ...], filler: bytes = b"\0", extra: int = 0) -> bytes:
    """Bytes holding each placement, later ones over earlier ones, padded with ``filler``."""
    ends = [offset + len(match) for offset, match in placements if offset >= 0]
    tails = [-offset for offset, _ in placements if offset < 0]
    size = max(ends, default=0) + max(tails, default=0) + extra
    data = bytearray((filler * (size // len(filler) + 1))[:size])
    for offset, match in placements:
        start = offset if offset >= 0 else size + offset
        data[start : start + len(match)] = match
    return bytes(data)


@pytest.mark.skipif(
    not puremagic.__version__.startswith("1."), reason="the index follows puremagic 1.x"
)
def test_the_index_holds_puremagics_signatures():
    # The fast path is in use: otherwise every test here would compare puremagic with itself.
    assert mime._signatures() is not None
    assert len(SIGNATURES) > 1800
    assert len(TIES) > 1000


def test_every_signature_sniffs_as_puremagic_says():
    wrong = []
    for placements, extension in SIGNATURES:
        for filler, extra in ((b"\0", 0), (b"\0", 40), (b"\xff ab", 600)):
            data = build(placements, filler, extra)
            for filename in (None, f"file{extension}", "file.bin"):
                if sniff(data, filename) != puremagics(data, filename):
                    wrong.append((placements, filler, extra, filename))
    assert wrong == []


FILENAMES = st.one_of(
    st.none(),
    st.sampled_from(EXTENSIONS).map(lambda extension: f"dir.x/file{extension}"),
    st.text(max_size=12),
)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """Random bytes, two signatures that tie, or up to four signatures (some cut short)
    over random filler."""
    shape = draw(st.sampled_from(["random", "tie", "signatures"]))
    if shape == "random":
        return draw(st.binary(min_size=1, max_size=200))
    if shape == "tie":
        return build(draw(st.sampled_from(TIES)), draw(st.binary(min_size=1, max_size=8)))
    chosen = draw(st.lists(st.sampled_from(SIGNATURES), min_size=1, max_size=4))
    placements = []
    for signature, _ in chosen:
        for offset, match in signature:
            cut = draw(st.integers(1, len(match))) if draw(st.integers(0, 4)) == 0 else len(match)
            placements.append((offset, match[:cut]))
    filler = draw(st.binary(min_size=1, max_size=8))
    return build(tuple(placements), filler, draw(st.integers(0, 2 * FOOT_BYTES)))


@settings(max_examples=400)
@given(heads(), FILENAMES)
def test_sniff_is_puremagics_on_any_head(data, filename):
    assert sniff(data, filename) == puremagics(data, filename)


@settings(max_examples=100)
@given(heads(), FILENAMES, st.integers(0, 2 * SNIFF_BYTES))
def test_a_files_ends_sniff_as_the_whole_file(data, filename, padding):
    data = data + bytes(padding)
    assert sniff_ends(data[:SNIFF_BYTES], data[-FOOT_BYTES:], filename) == sniff(data, filename)


@pytest.mark.parametrize("size", [0, 1, 100, 600, 37_000, 1024 * 1024])
@pytest.mark.parametrize("kind", sorted(samples.SAMPLES))
def test_the_sample_corpus_sniffs_as_puremagic_says(kind, size):
    data = samples.sized(kind, size) if size else samples.SAMPLES[kind]
    for filename in (None, f"sample.{kind}", "sample.bin"):
        assert sniff(data, filename) == puremagics(data, filename)


def test_sniffing_falls_back_to_puremagic_when_its_internals_change(monkeypatch):
    monkeypatch.setattr(mime, "_signatures", lambda: None)
    for kind, data in samples.SAMPLES.items():
        assert sniff(data, f"x.{kind}") == puremagics(data, f"x.{kind}")
        head, foot = data[:SNIFF_BYTES], data[-FOOT_BYTES:]
        assert sniff_ends(head, foot, f"x.{kind}") == puremagics(data, f"x.{kind}")


def test_an_index_that_cannot_hold_a_signature_is_not_used():
    header = puremagic.main.PureMagic(b"", 0, ".x", "x/x", "empty")
    main = SimpleNamespace(**{**vars(puremagic.main), "magic_header_array": [header]})
    with pytest.raises(ValueError, match="cannot hold"):
        mime._Signatures(SimpleNamespace(main=main))
