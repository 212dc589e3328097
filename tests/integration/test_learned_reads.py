"""Prepare what the model reads: learned from what its execute() did, per kind of attachment."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import warnings
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.integration.guard import BlockingAttachmentAccessWarning
from llm_async_attachments.store.state import peek
from llm_async_attachments.testing import samples
from tests.support.long_chat import CurrentOnly

ROOT = Path(__file__).resolve().parents[2]
_paths = itertools.count()


def fresh_path(name: str) -> str:
    return f"/reads/{next(_paths)}/{name}"


class Changing(llm.AsyncModel):
    """Reads nothing, until told to read every attachment of the conversation."""

    model_id = "changing"
    attachment_types = frozenset({"application/pdf"})
    read = False

    async def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any = None
    ) -> AsyncGenerator[str, None]:
        attachments = [a for r in conversation.responses for a in r.prompt.attachments]
        attachments += prompt.attachments
        sizes = [len(a.content_bytes()) for a in attachments] if self.read else []
        yield json.dumps(sizes)


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def pdf_url(file_server, size: int = 64 * 1024) -> str:
    body = samples.pdf() + b"\0" * size
    return file_server.add(fresh_path("doc.pdf"), body, content_type="application/pdf")


async def test_a_model_that_reads_nothing_gets_no_bodies_after_its_first_turn(file_server):
    model = laa.prepare_before_execute(Changing())
    conversation = model.conversation()
    size = 16 * 1024 * 1024  # more than the sockets' buffers can take unread
    urls = [await asyncio.to_thread(pdf_url, file_server, size) for _ in range(3)]
    attachments = [llm.Attachment(url=url) for url in urls]
    for attachment in attachments:
        await conversation.prompt("turn", attachments=[attachment]).text()
    assert file_server.body_bytes[path_of(urls[0])] > size  # not known yet: read whole
    for url, attachment in zip(urls[1:], attachments[1:], strict=True):
        # Learned: one GET for the type, its body never read.
        assert file_server.count("GET", url) == 1
        assert file_server.body_bytes.get(path_of(url), 0) < size
        assert peek(attachment).content is None


# The one read that was not foreseen blocks, as llm alone would (its own blocking
# download, certificates loaded and all): pyleak is told to allow that one.
@pytest.mark.no_leaks(blocking_threshold=2.0)
async def test_a_model_whose_reads_change_between_turns_still_works(file_server):
    changing = Changing()
    model = laa.prepare_before_execute(changing)
    conversation = model.conversation()
    urls = [pdf_url(file_server) for _ in range(3)]
    assert await conversation.prompt("one", attachments=[llm.Attachment(url=urls[0])]).text()
    await conversation.prompt("two", attachments=[llm.Attachment(url=urls[1])]).text()
    changing.read = True
    with pytest.warns(BlockingAttachmentAccessWarning, match="had not read attachments"):
        sizes = await conversation.prompt("three", attachments=[llm.Attachment(url=urls[2])]).text()
    assert json.loads(sizes) == [len(samples.pdf()) + 64 * 1024] * 3
    # Remembered: the next turn prepares every body first, and reads without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", BlockingAttachmentAccessWarning)
        assert json.loads(await conversation.prompt("four").text()) == json.loads(sizes)


async def test_history_that_a_model_never_reads_is_not_fetched_again(file_server):
    laa.configure(laa.Config(guard="strict", cache_bytes=256 * 1024))
    model = laa.prepare_before_execute(CurrentOnly())
    conversation = model.conversation()
    urls = [pdf_url(file_server, 128 * 1024) for _ in range(6)]
    for url in urls:
        reply = await conversation.prompt("turn", attachments=[llm.Attachment(url=url)]).text()
        assert json.loads(reply) == len(samples.pdf()) + 128 * 1024
    # Each body was fetched once; those that left memory were not fetched back.
    assert all(file_server.count("GET", url) == 1 for url in urls)
    first = conversation.responses[0].prompt.attachments[0]
    assert peek(first).content is None


def test_200_turns_of_llm_echo_with_a_new_2_mib_url_each_stay_within_a_64_mib_budget():
    """RSS measured in a child process: this one's memory is the whole suite's."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.long_chat", "--turns", "200", "--size", "2MiB"],
        cwd=ROOT,
        env={**os.environ, "LLM_ASYNC_ATTACHMENTS_CACHE_BYTES": "64MiB"},
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["turns_ok"] == 200
    assert report["rss_growth_mib"] <= 64 + 32, report  # the budget plus a small constant


class Base64Reader(llm.AsyncModel):
    """Reads each prompt's own attachments as base64, as inlining plugins do."""

    model_id = "base64-reader"
    attachment_types = frozenset({"application/pdf"})

    async def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any = None
    ) -> AsyncGenerator[str, None]:
        yield json.dumps([len(a.base64_content()) for a in prompt.attachments])


@pytest.mark.parametrize("reader", [CurrentOnly, Base64Reader])
async def test_large_content_gets_a_base64_copy_only_for_models_that_read_it(file_server, reader):
    model = laa.prepare_before_execute(reader())
    conversation = model.conversation()
    size = 3 * 1024 * 1024  # over the 2 MiB that is encoded on the loop
    urls = [await asyncio.to_thread(pdf_url, file_server, size) for _ in range(2)]
    attachments = [llm.Attachment(url=url) for url in urls]
    for attachment in attachments:
        await conversation.prompt("turn", attachments=[attachment]).text()
    state = peek(attachments[1])  # prepared once the model's reads were known
    assert state.content is not None
    assert (state.base64 is not None) == (reader is Base64Reader)
