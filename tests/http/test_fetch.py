"""URL attachments against a real loopback server: types, caps, bad servers, redirects."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import tracemalloc

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.testing import samples
from tests.support.models import Carrier

MiB = 1024 * 1024


def prompt_with(*attachments, model=None):
    carrier = llm.get_async_model(model) if model else Carrier()
    return llm.Prompt("hi", carrier, attachments=list(attachments))


async def prepare(*attachments, **config):
    config = dataclasses.replace(laa.get_config(), **config)
    return await laa.prepare_attachments(prompt_with(*attachments), config=config)


async def test_head_refused_still_gives_the_right_type(file_server):
    for status in (403, 405, 501):
        url = file_server.add(
            f"/refused-{status}.png", samples.png(), content_type="image/png", head_status=status
        )
        attachment = llm.Attachment(url=url)
        await laa.to_async(attachment).resolve_type()
        assert attachment.resolve_type() == "image/png"
        assert file_server.count("HEAD", f"/refused-{status}.png") == 1
        assert file_server.count("GET", f"/refused-{status}.png") == 1


@pytest.mark.parametrize(
    ("get_type", "expected"),
    [("application/pdf", "application/pdf"), (None, "application/pdf")],
)
async def test_a_head_that_calls_a_pdf_html_is_checked_with_one_get(
    file_server, get_type, expected
):
    url = file_server.add("/report", samples.pdf(), content_type=get_type, head_type="text/html")
    attachment = llm.Attachment(url=url)

    assert await laa.to_async(attachment).resolve_type() == expected

    assert file_server.requests == [("HEAD", "/report"), ("GET", "/report")]


async def test_a_real_html_page_stays_html_after_its_one_check(file_server):
    url = file_server.add("/page", b"<!doctype html><p>hello", content_type="text/html")

    assert await laa.to_async(llm.Attachment(url=url)).resolve_type() == "text/html"
    assert file_server.requests == [("HEAD", "/page"), ("GET", "/page")]


async def test_missing_content_type_is_sniffed_from_the_body(file_server):
    url = file_server.add("/anonymous", samples.pdf(), content_type=None)
    attachment = llm.Attachment(url=url)
    await prepare(attachment)
    assert attachment.resolve_type() == "application/pdf"
    assert attachment.content_bytes() == samples.pdf()
    assert file_server.count() == 1


async def test_octet_stream_is_sniffed_too(file_server):
    url = file_server.add("/blob", samples.wav(), content_type="application/octet-stream")
    attachment = llm.Attachment(url=url)
    assert await laa.to_async(attachment).resolve_type() == "audio/wav"


async def test_content_type_is_normalised(file_server):
    url = file_server.add("/note.txt", b"hello", content_type="Text/Plain; charset=UTF-8")
    attachment = llm.Attachment(url=url)
    await prepare(attachment)
    assert attachment.resolve_type() == "text/plain"


async def test_gzip_encoded_content_is_decoded(file_server):
    url = file_server.add("/zipped.pdf", samples.pdf(), content_type="application/pdf", gzip=True)
    attachment = llm.Attachment(url=url)
    await prepare(attachment)
    assert attachment.content_bytes() == samples.pdf()


async def test_progress_counts_the_bytes_sent_against_the_content_length(file_server):
    body = samples.sized("pdf", 300_000)
    plain = file_server.add("/plain.pdf", body, content_type="application/pdf")
    zipped = file_server.add("/zipped.pdf", body, content_type="application/pdf", gzip=True)
    told: dict[str, list[tuple[int, int | None]]] = {plain: [], zipped: []}
    hidden = zipped.replace("http://", "http://reader:s3cret@")

    def progress(source: str, received: int, total: int | None) -> None:
        told[source.replace("reader:***@", "")].append((received, total))

    prompt = prompt_with(llm.Attachment(url=plain), llm.Attachment(url=hidden))
    await laa.prepare_attachments(prompt, progress=progress)

    for url, reports in told.items():
        (total,) = {total for _, total in reports}
        received = [count for count, _ in reports]
        assert received == sorted(received) and received[-1] == total, url
    # As sent: the gzip body's own length, smaller than the PDF it decodes to.
    assert told[plain][-1][0] == len(body) > told[zipped][-1][0]


async def test_no_progress_for_a_body_already_prepared(file_server):
    url = file_server.add("/cat.png", samples.png(), content_type="image/png")
    told = []
    attachment = llm.Attachment(url=url)
    await prepare(attachment)

    await laa.prepare_attachments(prompt_with(attachment), progress=lambda *args: told.append(args))

    assert told == []
    assert file_server.requests == [("GET", "/cat.png")]


async def test_oversize_content_length_is_refused_before_the_body(file_server):
    url = file_server.url(f"/big?size={1024 * MiB}")
    with pytest.raises(laa.AttachmentTooLarge) as caught:
        await prepare(llm.Attachment(url=url), max_bytes=MiB)
    error = caught.value
    assert (error.size, error.limit, error.source) == (1024 * MiB, MiB, url)
    assert "Content-Length is 1073741824 bytes (1 GiB)" in str(error)
    assert "over the limit of 1 MiB per attachment. Nothing was read" in str(error)
    assert "LLM_ASYNC_ATTACHMENTS_MAX_BYTES" in str(error)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/endless", laa.AttachmentTooLarge),
        (f"/gzip-bomb?size={256 * MiB}", laa.AttachmentTooLarge),
        (f"/deflate-bomb?size={256 * MiB}", laa.AttachmentTooLarge),
        ("/short?declared=100000&sent=1000", laa.AttachmentFetchError),
    ],
)
async def test_bodies_that_lie_or_never_end_get_typed_errors_with_bounded_memory(
    file_server, path, expected
):
    tracemalloc.start()
    try:
        with pytest.raises(expected) as caught:
            await prepare(llm.Attachment(url=file_server.url(path)), max_bytes=4 * MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.source == file_server.url(path)
    assert peak < 4 * MiB + 4 * MiB  # the cap plus a small constant
    if expected is laa.AttachmentTooLarge:
        assert caught.value.size is None
        assert "reading stopped after" in str(caught.value)
    else:
        assert "could not be downloaded" in str(caught.value)


async def test_dripping_server_is_stopped_by_the_deadline(file_server):
    url = file_server.url("/drip?size=100&interval=0.2")
    with pytest.raises(laa.AttachmentTimeout) as caught:
        await prepare(llm.Attachment(url=url), deadline=0.5)
    assert "longer than the 0.5 s deadline" in str(caught.value)
    assert "LLM_ASYNC_ATTACHMENTS_DEADLINE" in str(caught.value)


async def test_stall_after_headers_hits_the_idle_timeout(file_server):
    url = file_server.url("/stall-after-headers")
    with pytest.raises(laa.AttachmentTimeout) as caught:
        await prepare(llm.Attachment(url=url), timeout=0.3)
    assert "no progress for 0.3 s" in str(caught.value)


async def test_three_redirects_are_followed(file_server):
    file_server.add("/target.png", samples.png(), content_type="image/png")
    attachment = llm.Attachment(url=file_server.url("/redirect/2?to=/target.png"))
    summary = await prepare(attachment)
    assert attachment.content_bytes() == samples.png()
    assert summary.requests == 4  # three redirects, then the file


async def test_a_fourth_redirect_is_refused(file_server):
    file_server.add("/target.png", samples.png(), content_type="image/png")
    url = file_server.url("/redirect/3?to=/target.png")
    with pytest.raises(laa.TooManyRedirects, match="more than 3 times"):
        await prepare(llm.Attachment(url=url))
    assert file_server.count("GET", "/target.png") == 0


async def test_a_redirect_loop_is_refused(file_server):
    with pytest.raises(laa.TooManyRedirects, match="redirects in a loop"):
        await prepare(llm.Attachment(url=file_server.url("/redirect-loop")))
    assert file_server.count() == 1


async def test_a_redirect_to_another_scheme_is_refused(file_server):
    with pytest.raises(laa.UnsupportedAttachmentURL, match="redirected to file://"):
        await prepare(llm.Attachment(url=file_server.url("/redirect-scheme")))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "http://", "nope"])
async def test_only_http_and_https_urls_are_fetched(url):
    with pytest.raises(laa.UnsupportedAttachmentURL) as caught:
        await prepare(llm.Attachment(url=url))
    assert caught.value.source == url
    assert "only those are fetched" in str(caught.value) or "not a valid URL" in str(caught.value)


@pytest.mark.parametrize(
    ("code", "hint"), [(404, "Check the URL"), (403, "credentials"), (503, "try again later")]
)
async def test_error_statuses_are_typed(file_server, code, hint):
    url = file_server.url(f"/status/{code}")
    with pytest.raises(laa.AttachmentHTTPStatusError) as caught:
        await prepare(llm.Attachment(url=url))
    assert caught.value.status_code == code
    assert f"HTTP {code}" in str(caught.value)
    assert hint in str(caught.value)


async def test_a_dead_server_is_a_fetch_error(file_server):
    dead = "http://127.0.0.1:9/nothing-listens-here"
    with pytest.raises(laa.AttachmentFetchError, match="could not be downloaded: ConnectError"):
        await prepare(llm.Attachment(url=dead))


async def test_cancelling_mid_download_leaves_nothing_behind(file_server):
    threads = threading.active_count()
    task = asyncio.create_task(
        prepare(llm.Attachment(url=file_server.url("/endless")), max_bytes=1024 * MiB)
    )
    while file_server.count("GET", "/endless") == 0:  # noqa: ASYNC110 (another thread)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # pyleak (applied to every async test) checks tasks and threads on exit.
    assert threading.active_count() <= threads + 1
