"""``data:`` URL attachments: decoded locally, under the caps, typed errors for bad ones."""

from __future__ import annotations

import base64
import dataclasses
import json
from urllib.parse import quote

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.store.state import peek
from llm_async_attachments.testing import samples
from tests.support.models import Carrier, Reader


def data_url(content: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64,{base64.b64encode(content).decode()}"


async def prepare(*urls: str, model=None, **config):
    attachments = [llm.Attachment(url=url) for url in urls]
    prompt = llm.Prompt("x", model or Carrier(), attachments=attachments)
    settings = dataclasses.replace(laa.get_config(), **config)
    summary = await laa.prepare_attachments(prompt, config=settings)
    return summary, attachments


async def test_a_base64_data_url_is_decoded_without_a_request(file_server):
    summary, (attachment,) = await prepare(data_url(samples.png()))

    assert summary.requests == 0 and file_server.requests == []
    assert attachment.resolve_type() == "image/png"
    assert attachment.content_bytes() == samples.png()
    assert summary.bytes_fetched == len(samples.png())


async def test_a_percent_encoded_data_url_and_the_default_type():
    text_url = "data:text/plain;charset=utf-8,caf%C3%A9%20ok"
    _summary, (text, bare) = await prepare(text_url, "data:,hi")

    assert (text.resolve_type(), text.content_bytes()) == ("text/plain", "café ok".encode())
    assert (bare.resolve_type(), bare.content_bytes()) == ("text/plain", b"hi")


async def test_a_model_reads_a_data_url_attachment_in_execute():
    """Through the hook: the plugin's sync reads inside execute() find the decoded bytes."""
    model = laa.prepare_before_execute(Reader())
    attachment = llm.Attachment(url=data_url(samples.png()))

    output = json.loads(await model.prompt("x", attachments=[attachment]).text())

    assert output == [["image/png", len(samples.png()), attachment.id()[:12]]]


async def test_a_model_that_takes_image_urls_gets_the_type_without_the_bytes():
    class TakesImageUrls(Carrier):
        supports_attachment_urls = frozenset({"image/*"})

    _summary, (attachment,) = await prepare(data_url(samples.png()), model=TakesImageUrls())

    state = peek(attachment)
    assert state.type == "image/png" and state.content is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("data:image/png;base64", "it has no comma"),
        ("data:image/png;base64,@@@@", "its base64 data is invalid"),
        ("data:image/png;base64,iVBORw0KG", "not a whole number of 4-character groups"),
        ("data:text/plain,100%", "a '%' that is not followed by two hex digits"),
        ("data:text/plain,100%zz", "a '%' that is not followed by two hex digits"),
    ],
)
async def test_a_malformed_data_url_is_a_typed_error_naming_it(url, problem):
    with pytest.raises(laa.UnsupportedAttachmentURL) as raised:
        await prepare(url)

    assert problem in str(raised.value)
    assert raised.value.source == url
    assert "RFC 2397" in str(raised.value)


async def test_bytes_that_contradict_the_declared_type_are_refused():
    with pytest.raises(laa.UnsupportedAttachmentURL, match="says image/jpeg, but its bytes are"):
        await prepare(data_url(samples.png(), "image/jpeg"))


async def test_a_data_url_over_max_bytes_is_refused_before_it_is_decoded():
    big = samples.sized("png", 8192)

    with pytest.raises(laa.AttachmentTooLarge, match="its decoded size is 8192 bytes"):
        await prepare(data_url(big), max_bytes=4096)


async def test_data_urls_count_against_the_calls_total():
    half = samples.sized("png", 6000)

    with pytest.raises(laa.AttachmentsTotalTooLarge):
        await prepare(data_url(half), data_url(half), max_total_bytes=10_000)


async def test_a_long_data_url_is_named_by_its_start_and_length():
    url = data_url(samples.sized("png", 100_000), "image/jpeg")

    with pytest.raises(laa.UnsupportedAttachmentURL) as raised:
        await prepare(url)

    assert raised.value.source == f"{url[:48]}... ({len(url):,} characters)"
    assert len(str(raised.value)) < 400


async def test_a_redirect_to_a_data_url_is_refused(file_server):
    target = quote(data_url(samples.png()), safe="")

    with pytest.raises(laa.UnsupportedAttachmentURL, match="redirect"):
        await prepare(file_server.url(f"/redirect-to?url={target}"))
