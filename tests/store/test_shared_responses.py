"""The shared URL cache: HTTP's rules across attachment objects, memory budget, disk tier."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gc
import itertools
import json
import os
from pathlib import Path

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.store import memory
from llm_async_attachments.store import shared_responses as urlcache
from llm_async_attachments.store.state import peek
from llm_async_attachments.testing import samples
from tests.support import LLM_HAS_MESSAGES
from tests.support.models import Reader

_paths = itertools.count()
READER = Reader()


def fresh_path(name: str) -> str:
    """A path no other test serves: the cache is the process's, across tests."""
    return f"/cache/{next(_paths)}/{name}"


def with_config(**changes) -> laa.Config:
    config = dataclasses.replace(laa.get_config(), **changes)
    laa.configure(config)
    return config


async def prepare_new_objects(url: str, times: int) -> list[llm.Attachment]:
    attachments = []
    for _ in range(times):
        attachment = llm.Attachment(url=url)
        await laa.prepare_attachments(llm.Prompt("look", READER, attachments=[attachment]))
        attachments.append(attachment)
    return attachments


def disk_files(directory: str) -> list[Path]:
    return [path for path in Path(directory).rglob("*") if path.is_file()]


async def test_separate_attachments_share_one_fetch_while_fresh(file_server):
    body = samples.png()
    url = file_server.add(
        fresh_path("cat.png"),
        body,
        content_type="image/png",
        headers=[("Cache-Control", "max-age=3600")],
    )
    attachments = await prepare_new_objects(url, 3)
    assert file_server.count("GET", url) == 1
    assert all(attachment.content_bytes() == body for attachment in attachments)


async def test_stale_or_no_cache_is_revalidated_and_a_304_costs_no_body(file_server):
    body = samples.pdf()
    url = file_server.add(
        fresh_path("doc.pdf"),
        body,
        content_type="application/pdf",
        headers=[("Cache-Control", "no-cache"), ("ETag", '"v1"')],
    )
    attachments = await prepare_new_objects(url, 3)
    assert file_server.count("GET", url) == 3  # every use asks the server...
    path = "/" + url.split("/", 3)[3]
    assert file_server.body_bytes[path] == len(body)  # ...but the body came once
    assert all(attachment.content_bytes() == body for attachment in attachments)


async def test_no_store_is_never_kept_in_memory_or_on_disk(file_server, _disk_tier):
    body = b"%PDF-1.4 secret" + b"\0" * 4096
    url = file_server.add(
        fresh_path("private.pdf"),
        body,
        content_type="application/pdf",
        headers=[("Cache-Control", "no-store")],
    )
    before = set(disk_files(_disk_tier))
    attachments = await prepare_new_objects(url, 2)
    assert file_server.count("GET", url) == 2
    for attachment in attachments:
        state = peek(attachment)
        assert state is not None and state.content is None  # gone once its prepare ended
    assert not any(body in path.read_bytes() for path in set(disk_files(_disk_tier)) - before)


@pytest.fixture
def _collected() -> None:
    """What earlier tests left alive is moved out of the collector's sight, so that the
    full collections 10,000 rows of garbage cause scan this test's objects only."""
    gc.collect()
    gc.freeze()


async def test_an_enrichment_of_10000_rows_over_100_urls_makes_100_fetches(file_server, _collected):
    """The rows pause between batches, as writing them to a database would. A loop that
    never waits starves every other thread of the GIL: it releases the GIL around each
    select() and takes it straight back, which restarts a waiting thread's 5 ms wait for
    a switch. pyleak's monitor thread then took 100-275 ms to wake (measured), although
    the loop had run pyleak's callback within 5 ms; it would report its own wait."""
    urls = [
        file_server.add(
            fresh_path(f"img{n}.png"),
            samples.png(),
            content_type="image/png",
            headers=[("Cache-Control", "max-age=600")],
        )
        for n in range(100)
    ]

    async def row(index: int) -> None:
        attachment = llm.Attachment(url=urls[index % 100])
        await laa.prepare_attachments(llm.Prompt("describe", READER, attachments=[attachment]))

    for batch in range(0, 10_000, 50):  # as an enrichment runs its rows, a batch at a time
        await asyncio.gather(*(row(index) for index in range(batch, batch + 50)))
        await asyncio.sleep(0.002)  # and stores them
    assert sum(file_server.count("GET", url) for url in urls) == 100
    assert sum(file_server.count("HEAD", url) for url in urls) == 0


async def test_content_over_the_budget_leaves_memory_and_comes_back_from_disk(file_server):
    with_config(cache_bytes=3 * 1024 * 1024)
    bodies = [os.urandom(1024 * 1024) for _ in range(6)]
    urls = [
        file_server.add(
            fresh_path(f"blob{n}.bin"), body, headers=[("Cache-Control", "max-age=600")]
        )
        for n, body in enumerate(bodies)
    ]
    first = [llm.Attachment(url=url, type="application/pdf") for url in urls]
    for attachment in first:
        await laa.prepare_attachments(llm.Prompt("one", READER, attachments=[attachment]))
    assert memory.statistics().held <= 3 * 1024 * 1024
    assert peek(first[0]).content is None  # left memory...
    again = [llm.Attachment(url=url, type="application/pdf") for url in urls[:2]]
    summary = await laa.prepare_attachments(llm.Prompt("two", READER, attachments=again))
    assert [a.content_bytes() for a in again] == bodies[:2]  # ...and came back from disk
    assert summary.requests == 0 and summary.bytes_fetched == 0
    assert all(file_server.count("GET", url) == 1 for url in urls)


@pytest.mark.no_leaks(blocking_threshold=0.2)  # llm's openai client loads certificates
@pytest.mark.skipif(not LLM_HAS_MESSAGES, reason="llm < 0.36 sends no earlier PDFs")
async def test_a_history_pdf_comes_back_from_disk_with_no_request(file_server, openai_server):
    with_config(cache_bytes=1024 * 1024)  # room for one of these PDFs at a time
    pdfs = [samples.pdf() + os.urandom(700 * 1024) for _ in range(3)]
    urls = [
        file_server.add(
            fresh_path(f"turn{n}.pdf"),
            body,
            content_type="application/pdf",
            headers=[("Cache-Control", "max-age=600")],
        )
        for n, body in enumerate(pdfs)
    ]
    model = llm.get_async_model("gpt-4o-mini")  # llm's own: it reads history PDFs
    conversation = model.conversation()
    first = llm.Attachment(url=urls[0])
    for turn, url in enumerate(urls):
        attachment = first if turn == 0 else llm.Attachment(url=url)
        assert await conversation.prompt(f"turn {turn}", attachments=[attachment]).text()
        if turn == 1:
            assert peek(first).content is None  # it left memory after turn 2
    assert [file_server.count("GET", url) for url in urls] == [1, 1, 1]  # none again
    last = json.dumps(openai_server.bodies[-1])
    assert base64.b64encode(pdfs[0]).decode() in last  # yet the model was sent it


async def test_a_new_process_finds_fresh_responses_on_disk(file_server):
    body = samples.pdf() + os.urandom(64 * 1024)
    url = file_server.add(
        fresh_path("kept.pdf"),
        body,
        content_type="application/pdf",
        headers=[("Cache-Control", "max-age=600")],
    )
    await prepare_new_objects(url, 1)
    urlcache._entries.clear()  # what a new process starts with: only the disk tier
    memory.Lease(0).release()  # and nothing in memory
    (again,) = await prepare_new_objects(url, 1)
    assert file_server.count("GET", url) == 1
    assert again.content_bytes() == body
