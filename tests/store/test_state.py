"""The prepared state belongs to one attachment object, as it is: not to its copies,
not after a change of its fields, and not past its life. llm's logging reads no file."""

from __future__ import annotations

import asyncio
import base64
import copy
import gc
import hashlib
import os
import pickle
import sqlite3
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import llm
import pytest
import sqlite_utils
from llm.migrations import migrate

import llm_async_attachments as laa
from llm_async_attachments.store import state as state_module
from llm_async_attachments.store.state import UNSET, Prepared, peek
from llm_async_attachments.testing import samples

MiB = 1024 * 1024


@pytest.fixture
def echo():
    return llm.get_async_model("echo")


@pytest.fixture
def png_url(file_server):
    return file_server.add("/cat.png", samples.png(), content_type="image/png")


@pytest.fixture
def gif_url(file_server):
    return file_server.add("/dog.gif", samples.gif(), content_type="image/gif")


async def prepare(model, *attachments):
    return await laa.prepare_attachments(llm.Prompt("x", model, attachments=list(attachments)))


# --- copies -------------------------------------------------------------------------


async def test_a_copy_whose_url_is_changed_answers_for_its_new_url(png_url, gif_url, echo):
    original = llm.Attachment(url=png_url)
    await prepare(echo, original)
    clone = copy.copy(original)
    clone.url = gif_url
    with pytest.raises(laa.BlockingAttachmentAccessError):
        clone.resolve_type()  # not the original's image/png
    with pytest.raises(laa.BlockingAttachmentAccessError):
        clone.content_bytes()
    await prepare(echo, clone)
    assert (clone.resolve_type(), clone.content_bytes()) == ("image/gif", samples.gif())
    assert (original.resolve_type(), original.content_bytes()) == ("image/png", samples.png())


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
async def test_a_copy_of_a_prepared_attachment_is_a_fresh_unprepared_one(
    file_server, png_url, echo, how
):
    original = llm.Attachment(url=png_url)
    await prepare(echo, original)
    clone = duplicate(original, how)
    assert clone == original and peek(clone) is None
    with pytest.raises(laa.BlockingAttachmentAccessError):
        clone.content_bytes()
    await prepare(echo, clone)
    assert clone.content_bytes() == samples.png()
    assert file_server.count("GET") == 2  # fetched for the copy: nothing was shared


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
async def test_a_copy_made_before_the_type_is_known_resolves_it_for_real(png_url, echo, how):
    attachment = llm.Attachment(url=png_url)
    echo.prompt("x", attachments=[attachment])  # defers llm's type check: a state, type unset
    clone = duplicate(attachment, how)
    # Off the loop a sync read may do its I/O; it must not answer a copied sentinel.
    assert await asyncio.to_thread(clone.resolve_type) == "image/png"


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
async def test_an_attachment_can_be_copied_and_pickled_while_it_is_being_prepared(
    file_server, echo, how
):
    url = file_server.add("/slow.png", samples.png(), content_type="image/png", latency=0.3)
    attachment = llm.Attachment(url=url)
    preparing = asyncio.create_task(prepare(echo, attachment))
    await asyncio.sleep(0.05)
    assert not preparing.done()  # the fetch is in flight: the server waits 0.3 s
    clone = duplicate(attachment, how)
    await preparing
    assert clone == attachment and peek(clone) is None
    assert attachment.content_bytes() == samples.png()


def test_the_unset_type_stays_unset_through_copies_and_pickles():
    assert copy.copy(UNSET) is UNSET
    assert copy.deepcopy(UNSET) is UNSET
    assert pickle.loads(pickle.dumps(UNSET)) is UNSET
    assert repr(UNSET) == "UNSET"
    assert copy.deepcopy(Prepared()).type is UNSET


def duplicate(attachment, how):
    if how == "copy":
        return copy.copy(attachment)
    if how == "deepcopy":
        return copy.deepcopy(attachment)
    return pickle.loads(pickle.dumps(attachment))


# --- changes to the fields a state was computed from ----------------------------------


async def test_changing_the_url_of_a_prepared_attachment_unprepares_it(png_url, gif_url, echo):
    attachment = llm.Attachment(url=png_url)
    await prepare(echo, attachment)
    attachment.url = gif_url
    assert peek(attachment) is None
    with pytest.raises(laa.BlockingAttachmentAccessError):
        attachment.resolve_type()
    await prepare(echo, attachment)
    assert (attachment.resolve_type(), attachment.content_bytes()) == ("image/gif", samples.gif())


async def test_changing_the_path_of_a_prepared_attachment_unprepares_it(tmp_path, echo):
    first, second = tmp_path / "a.png", tmp_path / "b.gif"
    first.write_bytes(samples.png())
    second.write_bytes(samples.gif())
    attachment = llm.Attachment(path=str(first))
    await prepare(echo, attachment)
    attachment.path = str(second)
    for method in ("resolve_type", "content_bytes", "id"):
        with pytest.raises(laa.BlockingAttachmentAccessError):
            getattr(attachment, method)()
    await prepare(echo, attachment)
    assert (attachment.resolve_type(), attachment.content_bytes()) == ("image/gif", samples.gif())
    assert attachment.id() == hashlib.sha256(samples.gif()).hexdigest()


async def test_new_content_bytes_get_their_own_id_and_base64(echo):
    big = bytes(range(256)) * (12 * 1024)  # 3 MiB: hashed and encoded ahead, off the loop
    attachment = llm.Attachment(content=big)
    await prepare(echo, attachment)
    other = big[::-1]
    attachment.content = other

    def answers():  # 3 MiB of hashing and encoding: on a worker thread, not the loop
        expected = (hashlib.sha256(other).hexdigest(), base64.b64encode(other).decode())
        return (attachment.id(), attachment.base64_content()) == expected

    assert await asyncio.to_thread(answers)


# --- memory -------------------------------------------------------------------------


async def test_the_state_table_keeps_no_attachment_alive(png_url, tmp_path, echo):
    path = tmp_path / "cat.png"
    path.write_bytes(samples.png())
    attachments = [llm.Attachment(url=png_url), llm.Attachment(path=str(path))]
    await prepare(echo, *attachments)
    assert all(peek(a) is not None for a in attachments)
    keys = [id(a) for a in attachments]
    refs = [weakref.ref(a) for a in attachments]
    del attachments
    gc.collect()  # the prompt and its task group are gone; nothing else may hold them
    assert [ref() for ref in refs] == [None, None]
    assert not set(keys) & set(state_module._table)


# --- llm's log_to_db() ----------------------------------------------------------------


_opened: list[str] | None = None


def _record_opens(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], str | bytes):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_record_opens)  # inert unless a test is watching


@contextmanager
def files_opened() -> Iterator[list[str]]:
    """Every file opened by name, on any thread, while the block runs."""
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


async def logging_db() -> sqlite_utils.Database:
    """llm's log database, in memory, migrated on a worker thread (it takes a while)."""
    db = sqlite_utils.Database(sqlite3.connect(":memory:", check_same_thread=False))
    await asyncio.to_thread(migrate, db)
    return db


# llm >= 0.36; before, AsyncResponse only inherits a log_to_db() that cannot work for it.
ASYNC_LOG_TO_DB = "log_to_db" in vars(llm.AsyncResponse)


async def log_on_the_loop(response, db) -> None:
    if ASYNC_LOG_TO_DB:
        response.log_to_db(db)
    else:  # what 0.36's does
        (await response.to_sync_response()).log_to_db(db)


async def test_log_to_db_reads_no_prepared_path_on_the_loop(tmp_path, echo):
    path = tmp_path / "cat.png"
    path.write_bytes(samples.png())
    response = echo.prompt("x", attachments=[llm.Attachment(path=str(path))])
    await response.text()
    db = await logging_db()
    with files_opened() as opened:
        await log_on_the_loop(response, db)  # the guard is strict: no silent blocking
    assert str(path) not in opened
    [row] = db["attachments"].rows
    assert (row["id"], row["type"]) == (hashlib.sha256(samples.png()).hexdigest(), "image/png")


@pytest.mark.skipif(
    not ASYNC_LOG_TO_DB,
    reason="llm < 0.36 logs through id() and resolve_type() alone: no file to open",
)
async def test_log_to_db_of_an_unprepared_path_is_stopped_before_the_file_is_opened(tmp_path, echo):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(samples.png())
    second.write_bytes(samples.png())
    # Type and id given: only llm's log hashing still needs the file.
    attachment = llm.Attachment(path=str(first), type="image/png", _id="0" * 64)
    response = echo.prompt("x", attachments=[attachment])
    await response.text()
    attachment.path = str(second)  # no longer what was prepared
    db = await logging_db()
    with files_opened() as opened, pytest.raises(laa.BlockingAttachmentAccessError) as caught:
        response.log_to_db(db)
    assert str(second) not in opened
    assert f"llm's log_to_db() would read the attachment path {second}" in str(caught.value)
    assert caught.value.method == "log_to_db"
