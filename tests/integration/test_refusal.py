"""The type decides before the body: what the model refuses is never downloaded or read."""

from __future__ import annotations

import asyncio
from pathlib import Path

import llm
import pytest

from llm_async_attachments import mime
from llm_async_attachments.testing import samples

MiB = 1024 * 1024
REFUSED = "This model does not support attachments of type 'application/pdf'"


def bytes_read_by_this_process() -> int:
    """The kernel's count of bytes this process read (``rchar``, all threads)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


async def test_a_url_of_a_type_the_model_refuses_is_refused_from_its_headers(file_server):
    size = 30 * MiB
    body = await asyncio.to_thread(lambda: samples.pdf() + bytes(size))
    url = await asyncio.to_thread(
        file_server.add, "/refused/big.pdf", body, content_type="application/pdf"
    )
    images_only = llm.get_async_model("echo")
    with pytest.raises(ValueError, match=REFUSED):  # llm's own error
        await images_only.prompt("x", attachments=[llm.Attachment(url=url)]).text()
    assert file_server.count("GET", url) == 1
    # Only what the sockets' buffers took before the response was closed (about
    # 128 KiB here); prepare used to read all 30 MiB before llm's check refused it.
    assert file_server.body_bytes.get("/refused/big.pdf", 0) < size // 3


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux's /proc/self/io")
@pytest.mark.skipif(not mime.sniffs_from_ends(), reason="puremagic 1.x reads a file's ends")
async def test_a_file_of_a_type_the_model_refuses_is_sniffed_from_its_ends_not_read(tmp_path):
    size = 20 * MiB
    path = tmp_path / "big.pdf"
    await asyncio.to_thread(path.write_bytes, samples.pdf() + bytes(size))
    images_only = llm.get_async_model("echo")
    before = bytes_read_by_this_process()
    with pytest.raises(ValueError, match=REFUSED):
        await images_only.prompt("x", attachments=[llm.Attachment(path=str(path))]).text()
    # Its first and last bytes, as llm's own sniffing reads; prepare used to read it all.
    assert bytes_read_by_this_process() - before < 2 * MiB
