"""Transport-level edge cases that a real server cannot easily produce (respx, through
pytest-httpx2's ``httpx2_mock``: it stands in for httpcore2's connection pool)."""

from __future__ import annotations

import zlib

import httpcore2
import httpx2
import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.testing import samples
from tests.support.models import Carrier

URL = "https://files.example.test/x.pdf"


async def prepare(url=URL):
    attachment = llm.Attachment(url=url)
    prompt = llm.Prompt("x", Carrier(), attachments=[attachment])
    await laa.prepare_attachments(prompt)
    return attachment


async def test_an_unsupported_content_encoding_is_refused(httpx2_mock):
    httpx2_mock.get(URL).respond(200, content=b"\x00" * 10, headers={"Content-Encoding": "br"})
    with pytest.raises(laa.AttachmentFetchError, match="Content-Encoding 'br', which is not"):
        await prepare()


async def test_an_unexpected_httpx2_error_is_still_an_attachment_error(httpx2_mock):
    httpx2_mock.get(URL).mock(side_effect=httpx2.DecodingError("bad chunk"))
    with pytest.raises(laa.AttachmentFetchError, match="DecodingError: bad chunk"):
        await prepare()


async def test_raw_deflate_without_a_zlib_header_is_decoded(httpx2_mock):
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = compressor.compress(samples.pdf()) + compressor.flush()
    httpx2_mock.get(URL).respond(
        200,
        content=body,
        headers={"Content-Encoding": "deflate", "Content-Type": "application/pdf"},
    )
    attachment = await prepare()
    assert attachment.content_bytes() == samples.pdf()


async def test_a_connect_timeout_is_an_attachment_timeout(httpx2_mock):
    httpx2_mock.get(URL).mock(side_effect=httpx2.ConnectTimeout("timed out"))
    with pytest.raises(laa.AttachmentTimeout, match="no progress for 10 s \\(ConnectTimeout\\)"):
        await prepare()


async def test_a_reset_connection_is_a_fetch_error(httpx2_mock):
    httpx2_mock.get(URL).mock(side_effect=httpx2.ReadError("connection reset by peer"))
    with pytest.raises(laa.AttachmentFetchError, match="ReadError: connection reset by peer"):
        await prepare()


async def test_httpcore2_errors_reach_us_as_httpx2_errors_of_the_same_name(httpx2_mock):
    """What the pool raises, the transport maps, as httpx2's own transport does."""
    httpx2_mock.get(URL).mock(side_effect=httpcore2.RemoteProtocolError("peer closed"))
    with pytest.raises(laa.AttachmentFetchError, match="RemoteProtocolError: peer closed"):
        await prepare()
