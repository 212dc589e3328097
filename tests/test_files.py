"""Path attachments: read with aiofiles under the caps; unreadable paths get typed errors."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import llm
import pytest

import llm_async_attachments as laa
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
