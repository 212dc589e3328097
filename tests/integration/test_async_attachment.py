"""AsyncAttachment: awaitable reads, a shared cache with llm.Attachment, and the way back."""

from __future__ import annotations

import base64

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.testing import samples


@pytest.fixture
def pdf_url(file_server):
    return file_server.add("/doc.pdf", samples.pdf(), content_type="application/pdf")


async def test_awaitable_reads_of_a_url(file_server, pdf_url):
    attachment = laa.AsyncAttachment(url=pdf_url)
    assert await attachment.resolve_type() == "application/pdf"
    assert file_server.requests == [("HEAD", "/doc.pdf")]
    assert await attachment.content_bytes() == samples.pdf()
    assert await attachment.base64_content() == base64.b64encode(samples.pdf()).decode()
    assert await attachment.content_bytes() == samples.pdf()
    assert file_server.requests == [("HEAD", "/doc.pdf"), ("GET", "/doc.pdf")]


async def test_a_view_shares_its_cache_with_the_llm_attachment(file_server, pdf_url):
    plain = llm.Attachment(url=pdf_url)
    view = plain.to_async()
    assert view is not plain and laa.to_async(view) is view
    assert (view.url, view.type, view.path, view.content) == (pdf_url, None, None, None)
    await view.content_bytes()
    assert plain.content_bytes() == samples.pdf()  # no I/O: the strict guard would raise
    assert file_server.count() == 1


async def test_to_sync_returns_a_plain_attachment_that_never_does_io(file_server, pdf_url):
    plain = await laa.AsyncAttachment(url=pdf_url).to_sync()
    assert isinstance(plain, llm.Attachment)
    assert (plain.resolve_type(), plain.content_bytes()) == ("application/pdf", samples.pdf())
    assert plain.base64_content() == base64.b64encode(samples.pdf()).decode()
    assert file_server.count() == 1


async def test_to_sync_without_content_prepares_only_the_type(file_server, pdf_url):
    plain = await laa.AsyncAttachment(url=pdf_url).to_sync(content=False)
    assert plain.resolve_type() == "application/pdf"
    assert file_server.requests == [("HEAD", "/doc.pdf")]
    with pytest.raises(laa.BlockingAttachmentAccessError):
        plain.content_bytes()


async def test_large_content_is_base64_encoded_off_the_loop():
    data = bytes(range(256)) * 16384  # 4 MiB
    attachment = laa.AsyncAttachment(content=data)
    assert await attachment.base64_content() == base64.b64encode(data).decode()


async def test_bytes_need_no_io_at_all():
    attachment = laa.AsyncAttachment(content=samples.gif())
    assert await attachment.resolve_type() == "image/gif"
    assert await attachment.content_bytes() == samples.gif()
    assert await attachment.id() == llm.Attachment(content=samples.gif()).id()


async def test_errors_surface_from_the_awaited_call(file_server):
    attachment = laa.AsyncAttachment(url=file_server.url("/status/404"))
    with pytest.raises(laa.AttachmentHTTPStatusError, match="HTTP 404"):
        await attachment.content_bytes()


def test_equality_and_repr():
    one = laa.AsyncAttachment(url="https://example.com/a.png")
    assert one == laa.AsyncAttachment(url="https://example.com/a.png")
    assert one != laa.AsyncAttachment(url="https://example.com/b.png")
    assert repr(one) == "<AsyncAttachment URL https://example.com/a.png>"
