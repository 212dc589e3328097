"""Path attachments: one worker-thread job per file, under the caps; typed errors."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import os
import subprocess
import sys
import textwrap
import threading

import llm
import puremagic
import pytest

import llm_async_attachments as laa
from llm_async_attachments import mime
from llm_async_attachments.caps import Budget
from llm_async_attachments.core import files
from llm_async_attachments.testing import samples
from tests.support.models import Carrier

MiB = 1024 * 1024


async def prepare(attachment, **config):
    config = dataclasses.replace(laa.get_config(), **config)
    prompt = llm.Prompt("hi", Carrier(), attachments=[attachment])
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


# Sniffing a file from its ends is what llm does with puremagic 1.x; with other
# releases the whole file is read first (see mime.sniffs_from_ends).
FROM_ENDS = pytest.mark.skipif(
    not mime.sniffs_from_ends(), reason="puremagic 1.x reads a file's ends only"
)


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
    prompt = llm.Prompt("hi", Carrier(), attachments=attachments)
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
    prompt = llm.Prompt("hi", Carrier(), attachments=attachments)
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
        prompt = llm.Prompt("x", Carrier(), attachments=[attachment])
        await laa.prepare_attachments(prompt)
        return attachment.content_bytes()

    for _ in range(50):
        assert asyncio.run(read()) == samples.png()
    assert files._slots.loops() == 0


# --- the type decides before the body ------------------------------------------------


def bytes_read_by_this_process() -> int:
    """The kernel's count of bytes this process's read() and pread() calls returned."""
    with open("/proc/self/io", "rb") as io_stats:
        return int(io_stats.read().split(b"rchar:")[1].split()[0])


@FROM_ENDS
async def test_a_file_of_a_refused_type_is_not_read_past_its_ends(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(samples.png())
    os.truncate(path, 20 * MiB)  # a PNG head, then zeros
    meter = Budget(64 * MiB, 64 * MiB).meter(str(path))

    before = bytes_read_by_this_process()
    refused = await files.read_path(str(path), meter, sniff=True, wanted=lambda t: t == "x/y")
    refused_read = bytes_read_by_this_process() - before
    assert refused == files.FileContent(None, "", "image/png")
    assert meter.count == mime.SNIFF_BYTES + mime.FOOT_BYTES  # the ends, charged

    before = bytes_read_by_this_process()
    taken = await files.read_path(str(path), meter, sniff=True, wanted=lambda t: True)
    taken_read = bytes_read_by_this_process() - before
    assert (len(taken.content), taken.type) == (20 * MiB, "image/png")

    # The count sees a whole read (so it would see one in the refusal too).
    assert taken_read >= 20 * MiB > MiB > refused_read


async def test_a_wanted_type_is_read_hashed_and_typed_as_without_a_rule(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(samples.sized("pdf", MiB))
    budget = Budget(64 * MiB, 64 * MiB)
    plain = await files.read_path(str(path), budget.meter("a"), sniff=True)
    asked = []
    ruled = await files.read_path(
        str(path), budget.meter("b"), sniff=True, wanted=lambda t: asked.append(t) or True
    )
    assert ruled == plain
    assert asked == ["application/pdf"]  # once, before the body
    assert plain.sha256 == hashlib.sha256(samples.sized("pdf", MiB)).hexdigest()
    assert budget.used == 2 * MiB  # the ends read first are not charged twice


async def test_a_file_without_a_size_is_read_whole_then_refused():
    meter = Budget(MiB, MiB).meter("/proc/self/status")
    read = await files.read_path("/proc/self/status", meter, sniff=True, wanted=lambda t: False)
    assert (read.content, read.sha256) == (None, "")
    assert meter.count > len("Name:")  # all of it, there being no size to sniff the ends by


async def test_a_rule_is_not_asked_when_the_type_is_not_sniffed(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(samples.png())
    asked = []
    read = await files.read_path(
        str(path), Budget(MiB, MiB).meter("a"), wanted=lambda t: asked.append(t) or False
    )
    assert (read.content, read.type, asked) == (samples.png(), None, [])


def refuse(seen: list[str | None], content_type: str | None) -> bool:
    seen.append(content_type)
    return False


def llms_type(path) -> str | None:
    """llm's own type of a path; its "" (UTF-8 with a BOM) is no type, as everywhere here."""
    return llm.utils.mimetype_from_path(str(path)) or None


@FROM_ENDS
@pytest.mark.parametrize("size", [None, 600, 36_870, 37_200, MiB], ids=lambda s: f"size {s}")
@pytest.mark.parametrize("kind", sorted(samples.SAMPLES))
async def test_the_type_sniffed_from_the_ends_is_llms(tmp_path, kind, size):
    data = samples.SAMPLES[kind] if size is None else samples.sized(kind, size)
    budget = Budget(4 * MiB, 64 * MiB)
    for name in (f"sample.{kind}", "sample.bin", "sample"):
        path = tmp_path / name
        path.write_bytes(data)
        seen: list[str | None] = []
        read = await files.read_path(
            str(path), budget.meter(name), sniff=True, wanted=functools.partial(refuse, seen)
        )
        plain = await files.read_path(str(path), budget.meter(name), sniff=True)
        assert read.type == seen[0] == plain.type == llms_type(path), name


@FROM_ENDS
@pytest.mark.parametrize("size", [300, 600, 40_000, 200_000], ids=lambda s: f"size {s}")
async def test_a_type_told_by_the_end_of_a_file_is_llms(tmp_path, size):
    # puremagic's footer signatures (its multi-part rules after them too) are read from
    # the file's last bytes: the job reads those as llm does, whatever the size.
    budget = Budget(4 * MiB, 64 * MiB)
    for index, row in enumerate(puremagic.main.magic_footer_array):
        if -row.offset > size:
            continue  # no room for it
        path = tmp_path / f"tail-{index}"
        data = bytearray((b"\x13\x37 no magic here " * size)[:size])
        data[size + row.offset : size + row.offset + len(row.byte_match)] = row.byte_match
        await asyncio.to_thread(path.write_bytes, bytes(data))
        read = await files.read_path(str(path), budget.meter("t"), sniff=True, wanted=bool)
        expected = await asyncio.to_thread(llms_type, path)
        assert read.type == expected == (row.mime_type or None), row


def _shared_signatures() -> list[list[puremagic.PureMagic]]:
    """Header signatures that several types share: the file's extension decides."""
    groups: dict[tuple[int, bytes], list[puremagic.PureMagic]] = {}
    for row in puremagic.main.magic_header_array:
        groups.setdefault((row.offset, row.byte_match), []).append(row)
    return [rows for rows in groups.values() if len({row.mime_type for row in rows}) > 1]


async def test_the_file_name_breaks_ties_as_llms_does(tmp_path):
    budget = Budget(MiB, 64 * MiB)
    told = set()
    for index, rows in enumerate(_shared_signatures()):
        head = bytes(rows[0].offset) + rows[0].byte_match
        for row in rows:
            path = tmp_path / f"shared-{index}{row.extension}"
            path.write_bytes(head + b"\x13\x37 no magic here" * 4)
            read = await files.read_path(str(path), budget.meter("s"), sniff=True, wanted=bool)
            assert read.type == llms_type(path), path
            told.add((index, read.type))
    assert len(told) > len(_shared_signatures())  # the name changed some types
