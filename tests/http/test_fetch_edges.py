"""Transport-level edge cases that a real server cannot easily produce (respx)."""

from __future__ import annotations

import zlib

import httpx
import llm
import pytest
import respx

import llm_async_attachments as laa
from llm_async_attachments.testing import samples
from tests.support.models import Carrier

URL = "https://files.example.test/x.pdf"


async def prepare(url=URL):
    attachment = llm.Attachment(url=url)
    prompt = llm.Prompt("x", Carrier(), attachments=[attachment])
    await laa.prepare_attachments(prompt)
    return attachment


@respx.mock
async def test_an_unsupported_content_encoding_is_refused():
    respx.get(URL).respond(200, content=b"\x00" * 10, headers={"Content-Encoding": "br"})
    with pytest.raises(laa.AttachmentFetchError, match="Content-Encoding 'br', which is not"):
        await prepare()


@respx.mock
async def test_an_unexpected_httpx_error_is_still_an_attachment_error():
    respx.get(URL).mock(side_effect=httpx.DecodingError("bad chunk"))
    with pytest.raises(laa.AttachmentFetchError, match="DecodingError: bad chunk"):
        await prepare()


@respx.mock
async def test_raw_deflate_without_a_zlib_header_is_decoded():
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = compressor.compress(samples.pdf()) + compressor.flush()
    respx.get(URL).respond(
        200,
        content=body,
        headers={"Content-Encoding": "deflate", "Content-Type": "application/pdf"},
    )
    attachment = await prepare()
    assert attachment.content_bytes() == samples.pdf()


@respx.mock
async def test_a_connect_timeout_is_an_attachment_timeout():
    respx.get(URL).mock(side_effect=httpx.ConnectTimeout("timed out"))
    with pytest.raises(laa.AttachmentTimeout, match="no progress for 10 s \\(ConnectTimeout\\)"):
        await prepare()


@respx.mock
async def test_a_reset_connection_is_a_fetch_error():
    respx.get(URL).mock(side_effect=httpx.ReadError("connection reset by peer"))
    with pytest.raises(laa.AttachmentFetchError, match="ReadError: connection reset by peer"):
        await prepare()
