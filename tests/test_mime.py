import pytest

from llm_async_attachments.mime import matches, normalise, sniff, usable
from llm_async_attachments.prepare import UrlPolicy


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
