from types import SimpleNamespace

import puremagic
import pytest

from llm_async_attachments.mime import (
    FALLBACK_SNIFF_BYTES,
    SNIFF_BYTES,
    matches,
    normalise,
    sniff,
    sniff_bytes,
    usable,
)
from llm_async_attachments.prepare import UrlPolicy
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
