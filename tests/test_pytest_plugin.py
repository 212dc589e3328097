"""The pytest plugin for plugin authors: fixtures, and a check that does fail when it should."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import llm
import pytest
from pyleak import EventLoopBlockError, TaskLeakError

from tests.support.models import Reader


async def test_a_registry_model_passes(check_async_model):
    text = await check_async_model(llm.get_async_model("echo"))
    assert '"attachments"' in text


async def test_a_plain_plugin_reading_prepared_attachments_passes(check_async_model):
    text = await check_async_model(Reader())
    assert text.count("image/png") == 3  # URL, path and bytes


class Sleeper(Reader):
    model_id = "sleeper"

    async def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any = None):
        time.sleep(0.3)  # noqa: ASYNC251 - the defect under test
        yield "slept"


class Leaker(Reader):
    model_id = "leaker"

    async def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any = None):
        asyncio.get_running_loop().create_task(asyncio.sleep(5))
        yield "leaked"


class BypassesTheCache(Reader):
    """Calls llm's own unpatched read: a blocking download the guard cannot see."""

    model_id = "bypass"

    async def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any = None):
        for attachment in prompt.attachments:
            if attachment.url:
                llm.Attachment.content_bytes.__wrapped__(attachment)
        yield "done"


@pytest.mark.no_leaks(blocking=False, tasks=False)  # the inner check is the subject
@pytest.mark.parametrize(
    ("model", "error"),
    [
        (Sleeper(), EventLoopBlockError),
        (BypassesTheCache(), EventLoopBlockError),
        (Leaker(), TaskLeakError),
    ],
    ids=["sleeps", "bypasses the cache", "leaks a task"],
)
async def test_the_check_fails_models_that_block_or_leak(check_async_model, model, error):
    with pytest.raises((error, ExceptionGroup)) as caught:
        await check_async_model(model)
    errors = caught.value.exceptions if isinstance(caught.value, ExceptionGroup) else [caught.value]
    assert any(isinstance(e, error) for e in errors)
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.cancel()


async def test_server_knobs(attachment_server):
    import httpx2

    # Plain HTTP on loopback: verify=False spares the constructor loading the CA
    # bundle, which blocks the loop for ~100 ms and tripped pyleak on a busy machine.
    async with httpx2.AsyncClient(verify=False) as client:
        refused = attachment_server.url("pdf", head_refused=True)
        assert (await client.head(refused)).status_code == 405
        untyped = attachment_server.url("wav", content_type=None)
        assert "content-type" not in (await client.get(untyped)).headers
        typed = attachment_server.url("wav")
        assert (await client.get(typed)).headers["content-type"] == "audio/wav"
        big = attachment_server.url("png", size=100_000)
        assert len((await client.get(big)).content) >= 100_000
        oversize = attachment_server.oversize_url(10)
        assert (await client.get(oversize)).headers["content-length"] == "10"
    assert len(attachment_server.requests) == 5


def test_a_plugin_authors_suite_gets_the_fixtures_from_the_entry_point(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))  # this checkout
    pytester.makepyfile(
        test_my_plugin="""
        import llm

        class MyModel(llm.AsyncModel):
            model_id = "my-model"
            attachment_types = {"image/png"}

            async def execute(self, prompt, stream, response, conversation=None):
                yield str([len(a.content_bytes()) for a in prompt.attachments])

        async def test_never_blocks(check_async_model):
            assert await check_async_model(MyModel()) == "[69, 69, 69]"
    """
    )
    result = pytester.runpytest_subprocess("-p", "asyncio", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=1)
