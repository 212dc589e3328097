"""Callers preparing one attachment are kept apart: each is judged by its own config
and raises its own exception object; only equal fetch settings share a fetch."""

from __future__ import annotations

import asyncio
import dataclasses

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.core import prepare as prepare_module
from llm_async_attachments.store.state import fetch_key
from llm_async_attachments.testing import samples
from tests.support.models import Carrier

KiB = 1024
PAYLOAD = bytes(range(256)) * 200  # 50 KiB


@pytest.fixture
def echo():
    return Carrier()


@pytest.fixture
def big_url(file_server):
    """50 KiB, slow enough that a second caller arrives while the first is fetching."""
    return file_server.add(
        "/big.bin", PAYLOAD, content_type="application/octet-stream", latency=0.2
    )


def config(**changes) -> laa.Config:
    return dataclasses.replace(laa.get_config(), **changes)


def small() -> laa.Config:
    return config(max_bytes=10 * KiB)


def private() -> laa.Config:
    return config(block_private=True, retries=0)


async def prepare(echo, attachment, settings=None):
    prompt = llm.Prompt("x", echo, attachments=[attachment])
    return await laa.prepare_attachments(prompt, config=settings)


async def side_by_side(echo, attachment, first, second):
    """Two calls on one attachment, ``first`` started (and fetching) before ``second``."""
    return await asyncio.gather(
        prepare(echo, attachment, first), prepare(echo, attachment, second), return_exceptions=True
    )


# --- max_bytes ------------------------------------------------------------------------


@pytest.mark.parametrize("small_first", [True, False], ids=["small-first", "default-first"])
async def test_a_caller_with_a_small_max_bytes_neither_fails_nor_helps_a_default_caller(
    big_url, echo, small_first
):
    attachment = llm.Attachment(url=big_url)
    order = [small(), None] if small_first else [None, small()]
    results = await side_by_side(echo, attachment, *order)
    refused, done = results if small_first else reversed(results)
    assert isinstance(refused, laa.AttachmentTooLarge), refused
    assert refused.source == big_url and refused.limit == 10 * KiB
    assert isinstance(done, laa.PrepareSummary), done
    assert attachment.content_bytes() == PAYLOAD


async def test_content_cached_over_a_callers_max_bytes_is_refused_without_a_fetch(
    file_server, big_url, echo
):
    attachment = llm.Attachment(url=big_url)
    await prepare(echo, attachment)
    with pytest.raises(laa.AttachmentTooLarge) as caught:
        await prepare(echo, attachment, small())
    assert file_server.count() == 1
    assert caught.value.source == big_url
    assert (caught.value.limit, caught.value.size) == (10 * KiB, len(PAYLOAD))
    assert f"Attachment {big_url} is too large: it is {len(PAYLOAD)} bytes" in str(caught.value)
    assert attachment.content_bytes() == PAYLOAD  # still there for the callers it suits


async def test_a_path_read_under_a_larger_max_bytes_is_refused_to_a_smaller_one(tmp_path, echo):
    path = tmp_path / "big.bin"
    path.write_bytes(PAYLOAD)
    attachment = llm.Attachment(path=str(path))
    await prepare(echo, attachment)
    with pytest.raises(laa.AttachmentTooLarge) as caught:
        await prepare(echo, attachment, small())
    assert caught.value.source == str(path)


# --- block_private ----------------------------------------------------------------------


@pytest.mark.parametrize("private_first", [True, False], ids=["private-first", "open-first"])
async def test_a_caller_with_block_private_neither_fails_nor_helps_an_open_caller(
    big_url, echo, private_first
):
    attachment = llm.Attachment(url=big_url)  # 127.0.0.1: refused with block_private
    order = [private(), None] if private_first else [None, private()]
    results = await side_by_side(echo, attachment, *order)
    refused, done = results if private_first else reversed(results)
    assert isinstance(refused, laa.AttachmentAddressRefused), refused
    assert isinstance(done, laa.PrepareSummary), done
    assert attachment.content_bytes() == PAYLOAD


async def test_a_result_fetched_without_block_private_is_fetched_again_with_it(
    file_server, big_url, echo
):
    attachment = llm.Attachment(url=big_url)
    await prepare(echo, attachment)
    with pytest.raises(laa.AttachmentAddressRefused):
        await prepare(echo, attachment, private())
    assert attachment.content_bytes() == PAYLOAD  # the open caller's result stays
    assert file_server.count() == 1  # refused before connecting

    allowed = config(block_private=True, allow=("127.0.0.1",))
    await prepare(echo, attachment, allowed)  # fetched again, under its own policy
    assert file_server.count() == 2
    await prepare(echo, attachment)  # a stricter policy's result serves an open caller
    await prepare(echo, attachment, allowed)
    assert file_server.count() == 2


# --- sharing ---------------------------------------------------------------------------


async def test_callers_with_equal_fetch_settings_still_share_one_fetch(file_server, big_url, echo):
    other = config(max_total_bytes=1024 * KiB, concurrency=2, guard="warn")
    assert fetch_key(other) == fetch_key(laa.get_config())
    attachment = llm.Attachment(url=big_url)
    await side_by_side(echo, attachment, None, other)
    assert file_server.count() == 1


async def test_a_waiter_raises_its_own_copy_of_the_owners_error_without_its_notes(
    file_server, echo
):
    attachment = llm.Attachment(url=file_server.url("/status/404?latency=0.2"))

    async def owner():
        try:
            await prepare(echo, attachment)
        except laa.AttachmentError as error:
            error.add_note("Also failed: https://owner.example/private.png")
            raise

    mine, theirs = await asyncio.gather(owner(), prepare(echo, attachment), return_exceptions=True)
    assert file_server.count() == 1  # one fetch, its failure shared
    assert type(mine) is type(theirs) is laa.AttachmentHTTPStatusError
    assert theirs is not mine
    assert (str(theirs), theirs.source, theirs.status_code) == (
        str(mine),
        mine.source,
        mine.status_code,
    )
    assert mine.__notes__ == ["Also failed: https://owner.example/private.png"]
    assert not hasattr(theirs, "__notes__")


async def test_an_owners_bug_is_its_own_and_the_waiter_does_the_work(tmp_path, echo, monkeypatch):
    path = tmp_path / "cat.png"
    path.write_bytes(samples.png())
    real_read_path = prepare_module.read_path
    calls = 0

    async def broken_once(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.05)
            raise RuntimeError("a bug in the first read")
        return await real_read_path(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "read_path", broken_once)
    attachment = llm.Attachment(path=str(path))
    mine, theirs = await side_by_side(echo, attachment, None, None)
    assert isinstance(mine, RuntimeError)
    assert isinstance(theirs, laa.PrepareSummary), theirs
    assert calls == 2
    assert attachment.content_bytes() == samples.png()
