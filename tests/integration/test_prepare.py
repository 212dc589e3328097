"""prepare_attachments: finding attachments, caching across turns, URL policy, limits."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gc
import hashlib
import json
import weakref
from types import SimpleNamespace

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.http import pool
from llm_async_attachments.store.state import peek
from llm_async_attachments.testing import samples
from tests.support import LLM_HAS_MESSAGES, eventually
from tests.support.hostile_server import HostileFileServer
from tests.support.models import Carrier

MiB = 1024 * 1024


@pytest.fixture
def echo():
    return llm.get_async_model("echo")


@pytest.fixture
def urls(file_server):
    return SimpleNamespace(
        png=file_server.add("/cat.png", samples.png(), content_type="image/png", latency=0.05),
        pdf=file_server.add(
            "/doc.pdf", samples.pdf(), content_type="application/pdf", latency=0.05
        ),
    )


async def test_a_three_turn_conversation_fetches_each_url_once(file_server, urls, echo):
    conversation = echo.conversation()
    attachments = [llm.Attachment(url=urls.png), llm.Attachment(url=urls.pdf)]
    summaries = []
    for turn in range(3):
        prompt = llm.Prompt(
            f"turn {turn}",
            echo,
            attachments=attachments if turn == 0 else [],
            options=echo.Options(),  # llm < 0.36 defaults Prompt.options to {}
        )
        summaries.append(await laa.prepare_attachments(prompt, conversation))
        response = llm.AsyncResponse(prompt, echo, stream=False, conversation=conversation)
        output = json.loads(await response.text())
    assert [s.requests for s in summaries] == [2, 0, 0]
    assert [s.attachments for s in summaries] == [2, 2, 2]
    assert sorted(file_server.requests) == [("GET", "/cat.png"), ("GET", "/doc.pdf")]
    assert output["previous"] == [{"prompt": "turn 0"}, {"prompt": "turn 1"}]


async def test_caching_changes_neither_id_content_nor_equality(urls, echo):
    attachment = llm.Attachment(url=urls.png)
    twin = llm.Attachment(url=urls.png)
    before = attachment.id()
    twin.id()
    await laa.prepare_attachments(llm.Prompt("x", echo, attachments=[attachment]))
    assert attachment.id() == before
    assert attachment.content is None and attachment.type is None
    assert attachment == twin
    assert repr(attachment) == repr(twin)


async def test_finds_tool_result_message_part_and_response_attachments(file_server, urls, echo):
    def served(name, data, content_type):
        return llm.Attachment(url=file_server.add(name, data, content_type=content_type))

    from_tool = served("/tool.png", samples.png(), "image/png")
    produced = served("/made.jpg", samples.jpeg(), "image/jpeg")
    conversation = echo.conversation()
    earlier = llm.AsyncResponse(
        llm.Prompt("before", echo, tool_results=[llm.ToolResult("t", "out", [from_tool])]),
        echo,
        stream=False,
        conversation=conversation,
    )
    earlier.attachments.append(produced)
    conversation.responses.append(earlier)
    expected = {"/tool.png", "/made.jpg", "/cat.png"}
    extra = {}
    if LLM_HAS_MESSAGES:  # llm >= 0.36: attachment parts of messages=
        from llm import parts

        in_message = served("/part.gif", samples.gif(), "image/gif")
        part = parts.AttachmentPart(attachment=in_message)
        extra["messages"] = [parts.Message(role="user", parts=[part])]
        expected.add("/part.gif")
    prompt = llm.Prompt("now", echo, attachments=[llm.Attachment(url=urls.png)], **extra)
    summary = await laa.prepare_attachments(prompt, conversation)
    assert summary.attachments == len(expected)
    assert {path for _, path in file_server.requests} == expected
    assert from_tool.content_bytes() and produced.content_bytes()


async def test_models_that_take_urls_get_only_a_head(file_server, urls, echo):
    attachment = llm.Attachment(url=urls.png)
    model = SimpleNamespace(supports_attachment_urls=True)
    summary = await laa.prepare_attachments(
        llm.Prompt("x", echo, attachments=[attachment]), model=model
    )
    assert file_server.requests == [("HEAD", "/cat.png")]
    assert (summary.requests, summary.bytes_fetched) == (1, 0)
    assert attachment.resolve_type() == "image/png"
    with pytest.raises(laa.BlockingAttachmentAccessError):
        attachment.content_bytes()  # not fetched: the model reads the URL itself


async def test_url_patterns_decide_per_type_with_one_request_each(file_server, urls, echo):
    image, pdf = llm.Attachment(url=urls.png), llm.Attachment(url=urls.pdf)
    typed = llm.Attachment(url=file_server.url("/never-fetched.png"), type="image/png")
    model = SimpleNamespace(supports_attachment_urls={"image/*"})
    summary = await laa.prepare_attachments(
        llm.Prompt("x", echo, attachments=[image, pdf, typed]), model=model
    )
    assert sorted(file_server.requests) == [("GET", "/cat.png"), ("GET", "/doc.pdf")]
    assert summary.requests == 2
    assert (image.resolve_type(), pdf.resolve_type()) == ("image/png", "application/pdf")
    assert pdf.content_bytes() == samples.pdf()
    assert summary.bytes_fetched < len(samples.png()) + len(samples.pdf())


async def test_two_tasks_preparing_one_attachment_fetch_it_once(file_server, urls, echo):
    attachment = llm.Attachment(url=urls.pdf)
    prompts = [llm.Prompt("x", echo, attachments=[attachment]) for _ in range(5)]
    summaries = await asyncio.gather(*(laa.prepare_attachments(p) for p in prompts))
    assert file_server.count() == 1
    assert sum(s.requests for s in summaries) == 1


async def test_a_failure_is_shared_with_tasks_waiting_for_it(file_server, echo):
    attachment = llm.Attachment(url=file_server.url("/status/404?latency=0.1"))
    prompts = [llm.Prompt("x", echo, attachments=[attachment]) for _ in range(3)]
    results = await asyncio.gather(
        *(laa.prepare_attachments(p) for p in prompts), return_exceptions=True
    )
    assert all(isinstance(r, laa.AttachmentHTTPStatusError) for r in results)
    assert file_server.count() == 1


async def test_the_total_cap_covers_the_whole_call(tmp_path):
    paths = []
    for index in range(3):
        path = tmp_path / f"f{index}.bin"
        path.write_bytes(bytes(MiB))
        paths.append(llm.Attachment(path=str(path), type="application/octet-stream"))
    config = dataclasses.replace(laa.get_config(), max_total_bytes=2 * MiB + MiB // 2)
    with pytest.raises(laa.AttachmentsTotalTooLarge) as caught:
        await laa.prepare_attachments(llm.Prompt("x", Carrier(), attachments=paths), config=config)
    assert "over its total limit of 2.5 MiB" in str(caught.value)
    assert "LLM_ASYNC_ATTACHMENTS_MAX_TOTAL_BYTES" in str(caught.value)


async def test_the_first_failure_cancels_the_rest_and_is_raised_alone(file_server, echo):
    slow = llm.Attachment(url=file_server.url("/drip?size=100&interval=0.05"))
    broken = llm.Attachment(url=file_server.url("/status/500"))
    with pytest.raises(laa.AttachmentHTTPStatusError) as caught:
        await laa.prepare_attachments(llm.Prompt("x", echo, attachments=[slow, broken]))
    assert caught.value.source == broken.url  # not an ExceptionGroup
    assert peek_content(slow) is None


def peek_content(attachment):
    state = peek(attachment)
    return state and state.content


async def test_summary_reads_well_in_a_log(urls, echo):
    summary = await laa.prepare_attachments(
        llm.Prompt("x", echo, attachments=[llm.Attachment(url=urls.png)])
    )
    assert str(summary).startswith(
        f"1 attachment, 1 fetched ({len(samples.png())} bytes, 1 request) in "
    )


@pytest.mark.parametrize(
    ("attachments", "requests", "expected"),
    [
        (0, 0, "0 attachments, 0 fetched (0 bytes, 0 requests) in 0.010 s"),
        (1, 1, "1 attachment, 0 fetched (0 bytes, 1 request) in 0.010 s"),
        (2, 3, "2 attachments, 0 fetched (0 bytes, 3 requests) in 0.010 s"),
    ],
)
def test_summary_counts_are_singular_for_one(attachments, requests, expected):
    summary = laa.PrepareSummary(
        attachments=attachments, fetched=0, bytes_fetched=0, requests=requests, seconds=0.01
    )
    assert str(summary) == expected


def test_each_event_loop_gets_its_own_pool_closed_and_freed_with_the_loop(urls, echo, file_server):
    pools = []

    async def one_turn(url):
        attachment = llm.Attachment(url=url)
        await laa.prepare_attachments(llm.Prompt("x", echo, attachments=[attachment]))
        (running,) = pool.running_pools()
        pools.append(weakref.ref(running))
        return attachment.content_bytes()

    for _ in range(3):
        assert asyncio.run(one_turn(urls.png)) == samples.png()
        assert eventually(lambda: file_server.open_connections() == 0)  # closed at shutdown
    gc.collect()
    assert len(pools) == 3
    assert [ref() for ref in pools] == [None, None, None]
    assert pool.loops_with_pools() == 0


async def test_large_content_is_hashed_and_encoded_once_off_the_loop(file_server, tmp_path):
    big = bytes(range(256)) * (12 * 1024)  # 3 MiB
    url = file_server.add("/big.bin", big, content_type="application/octet-stream")
    path = tmp_path / "big.bin"
    path.write_bytes(big)
    attachments = [
        llm.Attachment(url=url),
        llm.Attachment(path=str(path)),
        llm.Attachment(content=big),
    ]
    await laa.prepare_attachments(llm.Prompt("x", Carrier(), attachments=attachments))
    expected = base64.b64encode(big).decode()
    for attachment in attachments:
        assert peek(attachment).base64 is not None  # ready before the model asks
        assert attachment.base64_content() == expected
    assert attachments[1].id() == attachments[2].id() == hashlib.sha256(big).hexdigest()


async def test_small_content_is_not_encoded_ahead(urls, echo):
    attachment = llm.Attachment(url=urls.png)
    await laa.prepare_attachments(llm.Prompt("x", echo, attachments=[attachment]))
    assert peek(attachment).base64 is None
    assert attachment.base64_content() == base64.b64encode(samples.png()).decode()


async def test_each_hosts_attachments_take_turns_so_one_slow_host_keeps_none_waiting(
    file_server,
):
    # One fetch per host at a time, two in all: the other host's attachment, last in the
    # prompt, goes with the slow host's first, not after all four of them.
    slow = [
        file_server.add(f"/slow{n}.png", samples.png(), content_type="image/png", latency=0.2)
        for n in range(4)
    ]
    with HostileFileServer() as other:
        quick = other.add("/quick.png", samples.png(), content_type="image/png")
        attachments = [llm.Attachment(url=url) for url in [*slow, quick]]
        config = dataclasses.replace(laa.get_config(), concurrency=2, host_concurrency=1)
        prompt = llm.Prompt("x", Carrier(), attachments=attachments)
        preparing = asyncio.create_task(laa.prepare_attachments(prompt, config=config))
        for _ in range(400):
            if other.count("GET") or preparing.done():
                break
            await asyncio.sleep(0.005)
        slow_requests_before_quick = file_server.count("GET")
        summary = await preparing
    assert summary.fetched == 5
    # The quick one and the slow host's first start together (which the servers see
    # first is a race); without the turns, it would wait behind two or more slow ones.
    assert slow_requests_before_quick <= 1


@pytest.mark.parametrize("cache_control", ["max-age=600", "no-store", None])
async def test_what_a_caller_prepared_stays_prepared_while_it_holds_the_prompt(
    file_server, echo, cache_control
):
    """Whatever the budget and Cache-Control: sync reads after prepare_attachments do
    no I/O while the caller holds the prompt; the budget applies again once it is gone."""
    headers = [("Cache-Control", cache_control)] if cache_control else []
    bodies = {
        f"/held-{cache_control}-{i}.png": samples.sized("png", 64 * 1024 + i) for i in range(6)
    }
    urls = [
        file_server.add(path, body, content_type="image/png", headers=headers)
        for path, body in bodies.items()
    ]
    config = dataclasses.replace(laa.get_config(), cache_bytes=1024, disk_cache_bytes=0)
    prompt = llm.Prompt(
        "hold", echo, attachments=[llm.Attachment(url=url) for url in urls], options=echo.Options()
    )
    await laa.prepare_attachments(prompt, config=config)
    fetched = file_server.count()
    gc.collect()  # nothing the caller holds leaves memory, over budget as it is
    for attachment, body in zip(prompt.attachments, bodies.values(), strict=True):
        assert attachment.content_bytes() == body  # the strict guard: no I/O here
        assert attachment.resolve_type() == "image/png"
    assert file_server.count() == fetched
    attachments = list(prompt.attachments)
    del prompt, attachment
    gc.collect()
    # The prompt is gone: its content is under the budget again, and 1 KiB holds none.
    assert all(peek(attachment).content is None for attachment in attachments)
