"""Path attachments: one worker-thread job per file, under the caps; typed errors."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import subprocess
import sys
import textwrap
import threading

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments import files, mime
from llm_async_attachments.budget import Budget
from llm_async_attachments.testing import samples

MiB = 1024 * 1024


async def prepare(attachment, **config):
    config = dataclasses.replace(laa.get_config(), **config)
    prompt = llm.Prompt("hi", llm.get_async_model("echo"), attachments=[attachment])
    return await laa.prepare_attachments(prompt, config=config)


async def test_a_file_is_read_once_and_served_from_the_cache(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(samples.png())
    attachment = llm.Attachment(path=str(path))
    summary = await prepare(attachment)
    path.unlink()  # any later read would fail loudly
    assert attachment.content_bytes() == samples.png()
    assert attachment.resolve_type() == "image/png"
    assert (summary.fetched, summary.bytes_fetched) == (1, len(samples.png()))
    assert (await prepare(attachment)).fetched == 0


async def test_a_file_over_the_cap_is_refused_from_its_size(tmp_path):
    path = tmp_path / "big.bin"
    with path.open("wb") as file:
        file.truncate(2 * MiB)
    with pytest.raises(laa.AttachmentTooLarge) as caught:
        await prepare(llm.Attachment(path=str(path)), max_bytes=MiB)
    assert caught.value.size == 2 * MiB
    assert f"Attachment {path} is too large: its file size is 2097152 bytes" in str(caught.value)


async def test_dev_zero_stops_at_the_cap():
    with pytest.raises(laa.AttachmentTooLarge) as caught:
        await prepare(llm.Attachment(path="/dev/zero"), max_bytes=MiB)
    assert caught.value.source == "/dev/zero"
    assert "reading stopped after 1048577 bytes" in str(caught.value)


async def test_missing_path(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(laa.AttachmentPathError) as caught:
        await prepare(llm.Attachment(path=str(missing)))
    assert str(caught.value) == (
        f"Attachment path {missing} cannot be read: it does not exist. "
        "Check the path, or pass the bytes with content= instead."
    )


async def test_directory(tmp_path):
    with pytest.raises(laa.AttachmentPathError, match="is a directory"):
        await prepare(llm.Attachment(path=str(tmp_path)))


async def test_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(laa.AttachmentPathError, match=r"is a FIFO \(named pipe\), not a file"):
        await prepare(llm.Attachment(path=str(fifo)))


async def test_symlink_loop(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(laa.AttachmentPathError, match="symbolic links"):
        await prepare(llm.Attachment(path=str(loop)))


def test_permission_denied(tmp_path):
    # Root reads anything, so as root the read runs in a child process without the
    # capabilities that let root ignore file permissions.
    path = tmp_path / "secret.png"
    path.write_bytes(samples.png())
    path.chmod(0)
    script = textwrap.dedent(f"""
        import asyncio, llm, llm_async_attachments as laa
        async def main():
            a = llm.Attachment(path={str(path)!r})
            try:
                await laa.prepare_attachments(llm.Prompt("x", llm.get_async_model("echo"),
                                                         attachments=[a]))
            except laa.AttachmentPathError as error:
                print(type(error).__name__, error)
        asyncio.run(main())
    """)
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    command = [*(drop if os.geteuid() == 0 else []), sys.executable, "-c", script]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == (
        f"AttachmentPathError Attachment path {path} cannot be read: permission denied. "
        "Check the path, or pass the bytes with content= instead."
    )


# --- the one job per file -------------------------------------------------------------


async def test_the_job_gives_content_id_and_type_as_llm_would(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(samples.pdf())
    attachment = llm.Attachment(path=str(path))
    await prepare(attachment)
    assert attachment.id() == hashlib.sha256(samples.pdf()).hexdigest()
    assert attachment.resolve_type() == "application/pdf"
    assert attachment.content_bytes() == samples.pdf()


async def test_an_explicit_type_is_not_sniffed(tmp_path, monkeypatch):
    sniffed = []
    monkeypatch.setattr(mime, "sniff", lambda *args, **kwargs: sniffed.append(args))
    path = tmp_path / "picture.png"
    path.write_bytes(samples.png())
    attachment = llm.Attachment(path=str(path), type="image/x-custom")
    await prepare(attachment)
    assert sniffed == []
    assert attachment.resolve_type() == "image/x-custom"
    assert attachment.id() == hashlib.sha256(samples.png()).hexdigest()


async def test_an_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    attachment = llm.Attachment(path=str(path))
    summary = await prepare(attachment)
    assert (attachment.content_bytes(), attachment.resolve_type()) == (b"", None)
    assert attachment.id() == hashlib.sha256(b"").hexdigest()
    assert summary.bytes_fetched == 0


async def test_a_file_without_a_size_is_read_to_its_end():
    # /proc files are regular files whose fstat size is 0.
    attachment = llm.Attachment(path="/proc/self/status", type="text/plain")
    await prepare(attachment)
    assert attachment.content_bytes().startswith(b"Name:")
    assert b"\nPid:" in attachment.content_bytes()


async def test_an_error_while_reading_is_a_path_error():
    # Reading /proc/self/mem at offset 0 fails with EIO once the file is open.
    with pytest.raises(laa.AttachmentPathError) as caught:
        await prepare(llm.Attachment(path="/proc/self/mem"))
    assert str(caught.value) == (
        "Attachment path /proc/self/mem cannot be read: Input/output error. "
        "Check the path, or pass the bytes with content= instead."
    )


async def test_many_files_run_a_few_jobs_at_a_time(tmp_path, monkeypatch):
    running, most = 0, 0
    lock = threading.Lock()
    real = files._read_file

    def counted(*args):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return real(*args)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(files, "_read_file", counted)
    contents = [samples.sized("png", 4096 + index) for index in range(3 * files.JOBS)]
    attachments = []
    for index, content in enumerate(contents):
        path = tmp_path / f"f{index}.png"
        path.write_bytes(content)
        attachments.append(llm.Attachment(path=str(path)))
    prompt = llm.Prompt("hi", llm.get_async_model("echo"), attachments=attachments)
    summary = await laa.prepare_attachments(prompt)
    assert summary.bytes_fetched == sum(map(len, contents))
    assert [a.content_bytes() for a in attachments] == contents
    assert {a.resolve_type() for a in attachments} == {"image/png"}
    assert 1 <= most <= files.JOBS


async def test_a_cancelled_prepare_gives_its_job_slots_back(tmp_path, monkeypatch):
    started, go_on = [], threading.Event()
    real = files._read_file

    def held(*args):
        started.append(args)
        go_on.wait(10)
        return real(*args)

    monkeypatch.setattr(files, "_read_file", held)
    attachments = []
    for index in range(2 * files.JOBS):
        path = tmp_path / f"f{index}.bin"
        path.write_bytes(bytes(64 * 1024))
        attachments.append(llm.Attachment(path=str(path)))
    prompt = llm.Prompt("hi", llm.get_async_model("echo"), attachments=attachments)
    task = asyncio.create_task(laa.prepare_attachments(prompt))
    async with asyncio.timeout(5):  # every slot is taken by a job that has started
        while len(started) < files.JOBS:  # noqa: ASYNC110 - set by worker threads
            await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    slots = await files._slots.get()
    assert not slots.locked()  # given back, though their threads still run
    go_on.set()
    async with asyncio.timeout(10):
        summary = await laa.prepare_attachments(prompt)
    assert summary.fetched == len(attachments)


def read_within(path, size, room):
    fd = os.open(path, os.O_RDONLY)
    try:
        return files._read_within(fd, size, lambda: room)
    finally:
        os.close(fd)


@pytest.mark.parametrize("size", [0, 1000, 2500, 3000, 10_000], ids=lambda s: f"fstat {s}")
def test_a_file_is_read_to_its_end_whatever_size_fstat_gave(tmp_path, size):
    # The file grew (fstat 1000), shrank (3000, 10,000) or has no size (0) since fstat.
    path = tmp_path / "changing.bin"
    path.write_bytes(os.urandom(2500))
    chunks, count = read_within(path, size, room=MiB)
    assert count == 2500
    assert b"".join(chunks) == path.read_bytes()


def test_a_file_of_its_fstat_size_is_read_in_one_piece(tmp_path):
    path = tmp_path / "steady.bin"
    path.write_bytes(os.urandom(3 * MiB))
    chunks, count = read_within(path, 3 * MiB, room=4 * MiB)
    assert (len(chunks), count) == (1, 3 * MiB)


@pytest.mark.parametrize("size", [0, 2 * MiB], ids=["no size", "fstat size"])
def test_reading_stops_one_byte_past_the_room(tmp_path, size):
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(2 * MiB))
    chunks, count = read_within(path, size, room=MiB + 10)
    assert count == sum(map(len, chunks)) == MiB + 11


async def test_a_file_that_outgrew_its_fstat_size_is_stopped_at_the_cap(tmp_path, monkeypatch):
    # fstat says 1 KiB, but the file has grown past the cap by the time it is read.
    path = tmp_path / "grown.bin"
    path.write_bytes(bytes(2 * MiB))
    meter = Budget(MiB, 4 * MiB).meter(str(path))
    real_fstat = os.fstat

    def stale_fstat(fd):
        info = real_fstat(fd)
        return os.stat_result((*info[:6], 1024, *info[7:]))

    monkeypatch.setattr(os, "fstat", stale_fstat)
    with pytest.raises(laa.AttachmentTooLarge, match="reading stopped after 1048577 bytes"):
        await files.read_path(str(path), meter)


def test_each_event_loop_gets_its_own_job_slots_freed_with_the_loop(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(samples.png())

    async def read() -> bytes:
        attachment = llm.Attachment(path=str(path))
        prompt = llm.Prompt("x", llm.get_async_model("echo"), attachments=[attachment])
        await laa.prepare_attachments(prompt)
        return attachment.content_bytes()

    for _ in range(50):
        assert asyncio.run(read()) == samples.png()
    assert files._slots.loops() == 0
