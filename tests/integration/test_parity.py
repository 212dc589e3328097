"""Types and ids equal llm's own, for paths, bytes and URLs of every common kind."""

from __future__ import annotations

import asyncio

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.testing import samples
from tests.support.models import Carrier

KINDS = ["png", "jpeg", "gif", "webp", "pdf", "wav", "mp3", "text", "unknown"]
# What a well-behaved server declares for each kind (llm returns the header as is).
SERVED_AS = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "pdf": "application/pdf",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "text": "text/plain",
    "unknown": "application/octet-stream",
}


async def llms_own(attachment: llm.Attachment) -> tuple[str | None, str]:
    """llm's unpatched methods, run where blocking is harmless: a worker thread."""
    resolve_type = llm.Attachment.resolve_type.__wrapped__
    attachment_id = llm.Attachment.id.__wrapped__
    return await asyncio.to_thread(lambda: (resolve_type(attachment), attachment_id(attachment)))


def forms(kind, tmp_path, file_server):
    data = samples.SAMPLES[kind]
    path = tmp_path / f"sample-{kind}.{kind}"
    path.write_bytes(data)
    url = file_server.add(f"/sample-{kind}", data, content_type=SERVED_AS[kind])
    return {"path": {"path": str(path)}, "content": {"content": data}, "url": {"url": url}}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", ["path", "content", "url"])
async def test_async_attachment_matches_llm(kind, form, tmp_path, file_server):
    fields = forms(kind, tmp_path, file_server)[form]
    expected = await llms_own(llm.Attachment(**fields))
    ours = laa.AsyncAttachment(**fields)
    assert (await ours.resolve_type(), await ours.id()) == expected


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", ["path", "content", "url"])
async def test_prepared_sync_reads_match_llm(kind, form, tmp_path, file_server):
    fields = forms(kind, tmp_path, file_server)[form]
    expected = await llms_own(llm.Attachment(**fields))
    attachment = llm.Attachment(**fields)
    prompt = llm.Prompt("x", Carrier(), attachments=[attachment])
    await laa.prepare_attachments(prompt)
    assert (attachment.resolve_type(), attachment.id()) == expected
    assert attachment.content_bytes() == samples.SAMPLES[kind]


def test_samples_cover_what_llm_detects():
    detected = {kind: llm.utils.mimetype_from_string(samples.SAMPLES[kind]) for kind in KINDS}
    assert detected == {**SERVED_AS, "unknown": None}
