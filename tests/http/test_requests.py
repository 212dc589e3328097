"""What goes over the wire: no cookies between callers, proxies, deadlines, retries,
and a typed error for every hostile URL, redirect, header and body."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import tracemalloc
import zlib

import httpx2
import llm
import pytest
import respx

import llm_async_attachments as laa
from llm_async_attachments.http import address_policy as policy
from llm_async_attachments.http import pool, retries
from llm_async_attachments.testing import samples
from tests.support.raw_server import RawServer, response

MiB = 1024 * 1024
PNG = samples.png()


async def prepare(*attachments, **changes):
    config = dataclasses.replace(laa.get_config(), **changes)
    prompt = llm.Prompt("x", llm.get_async_model("echo"), attachments=list(attachments))
    return await laa.prepare_attachments(prompt, config=config)


def png_answer(*extra_headers):
    def answer(head):
        yield response(200, [("Content-Type", "image/png"), *extra_headers], PNG)

    return answer


# Callers are strangers --------------------------------------------------------


async def test_a_cookie_set_for_one_attachment_is_never_sent_with_another():
    with RawServer(png_answer(("Set-Cookie", "session=alice-secret; Path=/"))) as server:
        await prepare(llm.Attachment(url=f"{server.base_url}/alice.png"))
        await prepare(llm.Attachment(url=f"{server.base_url}/bob.png"))
        await prepare(llm.Attachment(url=f"{server.base_url}/carol.png"))
    assert len(server.heads) == 3
    assert not any(b"cookie:" in head.lower() for head in server.heads), server.heads


# Proxies ----------------------------------------------------------------------


async def test_proxies_from_the_environment_are_used_as_llm_uses_them(monkeypatch):
    with RawServer(png_answer()) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        attachment = llm.Attachment(url="http://files.example.test/via-proxy.png")
        await prepare(attachment)
    assert attachment.content_bytes() == PNG
    assert proxy.heads[0].startswith(b"GET http://files.example.test/via-proxy.png HTTP/1.1")


async def test_no_proxy_hosts_are_fetched_directly(monkeypatch, file_server):
    url = file_server.add("/direct.png", PNG, content_type="image/png")
    with RawServer(png_answer()) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        await prepare(llm.Attachment(url=url))
    assert proxy.requests() == 0
    assert file_server.count("GET", "/direct.png") == 1


async def test_proxies_are_ignored_while_the_address_policy_is_on(monkeypatch, file_server):
    url = file_server.add("/policed.png", PNG, content_type="image/png")
    with RawServer(png_answer()) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        # A proxy would connect for us to addresses the policy never sees: go direct,
        # where the policy checks (and here allows) the address.
        await prepare(llm.Attachment(url=url), block_private=True, allow=("127.0.0.1",))
    assert proxy.requests() == 0
    assert file_server.count("GET", "/policed.png") == 1


async def test_an_unusable_proxy_is_a_typed_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "ftp://127.0.0.1:9")
    with pytest.raises(laa.AttachmentFetchError, match="HTTP_PROXY") as caught:
        await prepare(llm.Attachment(url="http://files.example.test/x.png"))
    assert caught.value.source == "http://files.example.test/x.png"


# Deadline and slots -----------------------------------------------------------


async def test_a_calls_attachments_wait_for_its_workers_not_against_the_queue_timeout(
    file_server,
):
    # One slot and 0.2 s of patience, but each fetch takes 0.3 s: the call's second
    # attachment starts when its first is done, not queued behind it against the clock.
    urls = [
        file_server.add(f"/turn{n}.png", PNG, content_type="image/png", latency=0.3)
        for n in range(2)
    ]
    summary = await prepare(
        *(llm.Attachment(url=url) for url in urls), concurrency=1, fetch_queue_timeout=0.2
    )
    assert summary.fetched == 2


async def test_the_deadline_starts_with_the_request_not_the_wait_for_a_slot(file_server):
    # One slot: the second fetch waits ~0.4 s for it, then takes ~0.3 s itself.
    first = file_server.add("/first.png", PNG, content_type="image/png", latency=0.4)
    second = file_server.add("/second.png", PNG, content_type="image/png", latency=0.3)
    summary = await prepare(
        llm.Attachment(url=first), llm.Attachment(url=second), concurrency=1, deadline=0.6
    )
    assert summary.fetched == 2


async def test_waiting_too_long_for_a_slot_is_its_own_error_and_asks_no_server(file_server):
    slow = file_server.add("/slow.png", PNG, content_type="image/png", latency=1.0)
    queued = file_server.add("/queued.png", PNG, content_type="image/png")
    settings = {"concurrency": 1, "fetch_queue_timeout": 0.2}
    # Another caller on the loop holds its only slot (its request has reached the server).
    holder = asyncio.create_task(prepare(llm.Attachment(url=slow), **settings))
    for _ in range(200):
        if file_server.count("GET", "/slow.png"):
            break
        await asyncio.sleep(0.005)
    with pytest.raises(laa.AttachmentQueueTimeout) as caught:
        await prepare(llm.Attachment(url=queued), **settings)
    assert (await holder).fetched == 1
    error = caught.value
    assert error.source == queued
    assert "waited 0.2 s for a free fetch slot" in str(error)
    assert "Its server was not contacted" in str(error)
    assert "LLM_ASYNC_ATTACHMENTS_CONCURRENCY" in str(error)
    assert "LLM_ASYNC_ATTACHMENTS_HOST_CONCURRENCY" in str(error)
    assert not isinstance(error, laa.AttachmentTimeout)  # not the server's fault
    assert file_server.count("GET", "/queued.png") == 0


# Retries ----------------------------------------------------------------------


def flaky(first: bytes):
    calls = []

    def answer(head):
        calls.append(head)
        yield first if len(calls) == 1 else response(200, [("Content-Type", "image/png")], PNG)

    return answer


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "12abc", "Fri, 99 Foo 2026 x"])
async def test_a_garbled_retry_after_is_ignored_not_an_untyped_error(value):
    with RawServer(flaky(response(503, [("Retry-After", value)]))) as server:
        summary = await prepare(llm.Attachment(url=f"{server.base_url}/x.png"), retries=1)
    assert summary.requests == 2


async def test_retry_after_zero_is_honoured(monkeypatch):
    monkeypatch.setattr(retries, "backoff", lambda attempt: 3600.0)  # past any deadline
    with RawServer(flaky(response(503, [("Retry-After", "0")]))) as server:
        summary = await prepare(llm.Attachment(url=f"{server.base_url}/x.png"), retries=1)
    assert summary.requests == 2


async def test_a_connect_timeout_on_head_is_not_tried_again_as_a_get():
    url = "http://files.example.test/photo.png"
    with respx.mock(using="httpcore2", assert_all_called=False) as router:
        head = router.head(url).mock(side_effect=httpx2.ConnectTimeout("timed out"))
        get = router.get(url).mock(side_effect=httpx2.ConnectTimeout("timed out"))
        with pytest.raises(laa.AttachmentTimeout, match="ConnectTimeout"):
            await laa.to_async(llm.Attachment(url=url)).resolve_type()
    assert (head.call_count, get.call_count) == (3, 0)  # retries=2: three attempts, not six


async def test_a_pool_timeout_on_head_is_neither_retried_nor_repeated_as_a_get():
    url = "http://files.example.test/photo.png"
    with respx.mock(using="httpcore2", assert_all_called=False) as router:
        head = router.head(url).mock(side_effect=httpx2.PoolTimeout("no connection"))
        get = router.get(url).mock(side_effect=httpx2.PoolTimeout("no connection"))
        with pytest.raises(laa.AttachmentTimeout, match="PoolTimeout"):
            await laa.to_async(llm.Attachment(url=url)).resolve_type()
    assert (head.call_count, get.call_count) == (1, 0)


async def test_a_head_that_is_never_answered_falls_back_to_get(file_server):
    url = file_server.url("/head-hangs")
    attachment = llm.Attachment(url=url)
    config = dataclasses.replace(laa.get_config(), timeout=0.3, retries=0)
    laa.configure(config)
    assert await laa.to_async(attachment).resolve_type() == "application/pdf"
    assert file_server.count("GET", "/head-hangs") == 1


async def test_a_server_speaking_garbage_is_asked_once_not_three_times():
    def garbage(head):
        yield b"HTTP/1.1 200 OK\r\nthis is not a header\r\n\r\n"
        yield b""

    with (
        RawServer(garbage) as server,
        pytest.raises(laa.AttachmentFetchError, match="RemoteProtocolError"),
    ):
        await prepare(llm.Attachment(url=f"{server.base_url}/x.png"))
    assert server.requests() == 1


async def test_a_dropped_connection_is_tried_again():
    calls = []

    def drop_first(head):
        calls.append(head)
        if len(calls) == 1:
            yield b""  # closed without a response
        yield response(200, [("Content-Type", "image/png")], PNG)

    with RawServer(drop_first) as server:
        summary = await prepare(llm.Attachment(url=f"{server.base_url}/x.png"))
    assert summary.requests == 2


# Hostile URLs, redirects and paths: typed errors ------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://files.test:99999/x.png", "has port 99999, outside 1-65535"),
        ("http://files.test:0/x.png", "has port 0, outside 1-65535"),
        ("http://files.test/\ud800.png", "cannot be encoded"),
        ("http://[::1/x.png", "is not a valid URL"),
        ("http://a..b.test/x.png", "has an empty label"),
        ("http://" + "a" * 64 + ".test/x.png", "has a label longer than 63 characters"),
        ("http://" + "a." * 127 + "test/x.png", "is longer than 253 characters"),
        ("http://xn--ls8h\u0300.test/x.png", "is not a valid URL"),
        ("http://files test/x.png", "is not a valid URL"),
    ],
)
@pytest.mark.parametrize("block_private", [False, True])
async def test_a_malformed_url_is_a_typed_refusal_before_any_connection(
    url, says, block_private, monkeypatch
):
    looked_up = []

    async def resolver(host, port):
        looked_up.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(policy, "resolve", resolver)
    with pytest.raises(laa.UnsupportedAttachmentURL, match="Fix the URL") as caught:
        await prepare(llm.Attachment(url=url), block_private=block_private)
    assert says in str(caught.value)
    assert caught.value.source
    assert looked_up == []


@pytest.mark.parametrize(
    ("location", "says"),
    [
        ("data:text/html,<script>alert(1)</script>", "is not an http:// or https:// URL"),
        ("javascript:alert(1)", "is not an http:// or https:// URL"),
        ("http://[::1/x", "which is not a valid URL"),
        ("http://127.0.0.1:99999/x", "has port 99999"),
        ("http://a..b/x", "has an empty label"),
        ("mailto:alice@files.test", "is not an http:// or https:// URL"),
    ],
)
async def test_a_redirect_to_a_bad_location_is_a_typed_refusal(location, says):
    def redirect(head):
        yield response(302, [("Location", location)])

    with RawServer(redirect) as server:
        url = f"{server.base_url}/moved.png"
        with pytest.raises(laa.UnsupportedAttachmentURL) as caught:
            await prepare(llm.Attachment(url=url))
    assert says in str(caught.value)
    assert caught.value.source == url
    assert server.requests() == 1


@pytest.mark.parametrize(
    ("path", "says"),
    [("/tmp/nul\0byte.png", "contains a NUL byte"), ("/tmp/\ud800.png", "cannot be encoded")],
)
async def test_a_path_no_file_system_can_hold_is_a_typed_refusal(path, says):
    with pytest.raises(laa.AttachmentPathError) as caught:
        await prepare(llm.Attachment(path=path))
    assert says in str(caught.value)
    assert caught.value.source == path


# Bodies -----------------------------------------------------------------------


def endless_after_a_member(head):
    yield response(
        200,
        [("Content-Type", "image/png"), ("Content-Encoding", "gzip")],
        b"",
    ).replace(b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n")
    member = gzip.compress(PNG)
    yield b"%x\r\n%s\r\n" % (len(member), member)
    padding = b"\0" * 65536
    chunk = b"%x\r\n%s\r\n" % (len(padding), padding)
    for _ in range(4096):  # 256 MiB, if nothing stopped it
        yield chunk


async def test_an_endless_stream_after_a_gzip_member_stops_at_the_cap_in_bounded_memory():
    with RawServer(endless_after_a_member) as server:
        tracemalloc.start()
        try:
            with pytest.raises(laa.AttachmentTooLarge, match="still compressed") as caught:
                await prepare(llm.Attachment(url=f"{server.base_url}/x.png"), max_bytes=MiB)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert caught.value.limit == MiB
    assert peak < 2 * MiB  # the old decoder grew 50-95 MiB past a 1 MiB cap here


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (gzip.compress(PNG)[:-6], "truncated gzip body"),
        (gzip.compress(PNG)[:-8] + b"\0\0\0\0" + gzip.compress(PNG)[-4:], "bad CRC-32"),
        (gzip.compress(PNG) + b"trailing junk", "data after the end"),
        (zlib.compress(PNG)[:-10], "truncated deflate body"),
    ],
    ids=["truncated", "bad crc", "trailing junk", "truncated deflate"],
)
async def test_a_damaged_compressed_body_is_a_typed_error(body, says):
    encoding = "deflate" if "deflate" in says else "gzip"

    def answer(head):
        yield response(200, [("Content-Type", "image/png"), ("Content-Encoding", encoding)], body)

    with RawServer(answer) as server:
        url = f"{server.base_url}/x.png"
        attachment = llm.Attachment(url=url)
        with pytest.raises(laa.AttachmentFetchError) as caught:
            await prepare(attachment)
    assert says in str(caught.value)
    assert caught.value.source == url
    with pytest.raises(laa.BlockingAttachmentAccessError):
        attachment.content_bytes()


async def test_a_multi_member_gzip_body_is_read_whole():
    halves = PNG[: len(PNG) // 2], PNG[len(PNG) // 2 :]
    body = gzip.compress(halves[0]) + gzip.compress(halves[1])

    def answer(head):
        yield response(200, [("Content-Type", "image/png"), ("Content-Encoding", "gzip")], body)

    with RawServer(answer) as server:
        attachment = llm.Attachment(url=f"{server.base_url}/x.png")
        await prepare(attachment)
    assert attachment.content_bytes() == PNG


# Limits -----------------------------------------------------------------------


async def test_one_host_gets_at_most_host_concurrency_connections(file_server):
    urls = [
        file_server.add(f"/host{i}.png", PNG, content_type="image/png", latency=0.05)
        for i in range(12)
    ]
    await prepare(*(llm.Attachment(url=u) for u in urls), concurrency=8, host_concurrency=3)
    assert file_server.peak_connections == 3


async def test_a_busy_host_leaves_the_other_slots_to_other_hosts(file_server):
    busy = [
        file_server.add(f"/busy{i}.png", PNG, content_type="image/png", latency=0.2)
        for i in range(8)
    ]
    # The same server under another name: another host for the limits.
    other = file_server.add("/other.png", PNG, content_type="image/png").replace(
        "127.0.0.1", "localhost"
    )
    summary = await prepare(
        *(llm.Attachment(url=u) for u in [*busy, other]), concurrency=3, host_concurrency=2
    )
    assert summary.fetched == 9
    assert file_server.peak_connections == 3  # two for the busy host, one for the other


async def test_no_transport_holds_more_than_16_connections(file_server):
    urls = [
        file_server.add(f"/wide{i}.png", PNG, content_type="image/png", latency=0.1)
        for i in range(40)
    ]
    await prepare(*(llm.Attachment(url=u) for u in urls), concurrency=40, host_concurrency=40)
    (only,) = pool.running_pools()
    statistics = only.statistics()
    assert statistics.connections == file_server.peak_connections == 40
    assert statistics.fullest_transport <= 16  # three transports share the 40
