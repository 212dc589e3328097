"""The guard: blocking sync reads on an event loop are stopped before any I/O."""

from __future__ import annotations

import asyncio
import warnings

import llm
import pyleak
import pytest

import llm_async_attachments as laa
from llm_async_attachments.integration import guard
from llm_async_attachments.testing import samples
from tests.support.sync_models import Recorder

METHODS = ["resolve_type", "content_bytes", "base64_content"]


@pytest.fixture
def png_url(file_server):
    return file_server.add("/guarded.png", samples.png(), content_type="image/png")


@pytest.mark.parametrize("method", METHODS)
async def test_strict_mode_raises_before_any_request(file_server, png_url, method):
    attachment = llm.Attachment(url=png_url)
    with pytest.raises(laa.BlockingAttachmentAccessError) as caught:
        getattr(attachment, method)()
    assert file_server.count() == 0
    message = str(caught.value)
    assert f"llm.Attachment.{method}() on the attachment URL {png_url}" in message
    assert "await llm_async_attachments.prepare_attachments(prompt, conversation)" in message
    assert f"await attachment.to_async().{method}()" in message  # code reading it directly
    assert "asyncio.to_thread" in message
    assert caught.value.attachment is attachment and caught.value.method == method


async def test_id_of_an_unprepared_path_is_guarded_but_a_url_id_is_free(tmp_path, png_url):
    path = tmp_path / "x.png"
    path.write_bytes(samples.png())
    with pytest.raises(laa.BlockingAttachmentAccessError, match=r"id\(\) on the attachment path"):
        llm.Attachment(path=str(path)).id()
    assert len(llm.Attachment(url=png_url).id()) == 64


async def test_reads_that_need_no_io_are_untouched(png_url):
    assert llm.Attachment(url=png_url, type="image/png").resolve_type() == "image/png"
    in_memory = llm.Attachment(content=samples.png())
    assert in_memory.resolve_type() == "image/png"
    assert in_memory.content_bytes() == samples.png()


async def test_prepared_attachments_read_without_io(file_server, png_url):
    attachment = llm.Attachment(url=png_url)
    await laa.prepare_attachments(
        llm.Prompt("x", llm.get_async_model("echo"), attachments=[attachment])
    )
    requests = file_server.count()
    assert attachment.resolve_type() == "image/png"
    assert attachment.content_bytes() == samples.png()
    assert attachment.base64_content()
    assert file_server.count() == requests == 1


async def test_raise_mode_raises_inside_async_model_execution_with_the_plugin_fixes(png_url):
    laa.configure(laa.Config(guard="raise"))
    with (
        guard.executing_async_model(),
        pytest.raises(laa.BlockingAttachmentAccessError) as caught,
    ):
        llm.Attachment(url=png_url).resolve_type()
    message = str(caught.value)
    assert "await llm_async_attachments.prepare_attachments(prompt, conversation)" in message
    assert "supports_async_attachments = True" in message
    assert "asyncio.to_thread" in message


class Unwrapped(llm.AsyncModel):
    """An async plugin's model that nothing wrapped: it reads on the loop."""

    model_id = "unwrapped"

    async def execute(self, prompt, stream, response, conversation=None):
        for attachment in prompt.attachments:
            yield str(len(attachment.content_bytes()))


async def test_an_unwrapped_async_model_is_told_the_plugin_fixes(png_url):
    attachment = llm.Attachment(url=png_url)
    prompt = llm.Prompt("x", Unwrapped(), attachments=[attachment])
    with pytest.raises(laa.BlockingAttachmentAccessError) as caught:
        async for _ in Unwrapped().execute(prompt, False, None):
            pass
    assert "supports_async_attachments = True" in str(caught.value)


@pytest.mark.no_leaks(blocking=False)  # this test blocks on purpose: Jupyter-style sync use
async def test_raise_mode_warns_once_per_attachment_outside_model_execution(
    file_server, png_url, tmp_path
):
    laa.configure(laa.Config(guard="raise"))
    local = tmp_path / "local.png"
    local.write_bytes(samples.png())
    attachments = [llm.Attachment(path=str(local)), llm.Attachment(url=png_url)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for attachment in attachments:  # one call site: a plugin's line reading every one
            assert attachment.resolve_type() == "image/png"
            assert attachment.content_bytes() == samples.png()
        assert attachments[1].resolve_type() == "image/png"
    messages = [str(w.message) for w in caught]
    assert [type(w.message) for w in caught] == [laa.BlockingAttachmentAccessWarning] * 2
    assert f"path {local}" in messages[0]
    assert f"URL {png_url}" in messages[1]  # the local file did not hide the download
    assert file_server.count("HEAD") == 2  # it warned, then did what llm does


@pytest.mark.no_leaks(blocking=False)  # this test blocks on purpose: Jupyter-style sync use
async def test_a_sync_model_on_the_loop_is_told_to_use_its_async_form(png_url):
    """``model.prompt(...).text()`` with a sync model, in a notebook cell."""
    laa.configure(laa.Config(guard="raise"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = Recorder().prompt("x", attachments=[llm.Attachment(url=png_url)]).text()
    assert '"image/png"' in text
    [warning] = caught
    message = str(warning.message)
    assert "The sync model 'recorder' is running on the event loop's thread" in message
    assert "model = llm.get_async_model('recorder')" in message
    assert "await response.text()" in message
    assert "supports_async_attachments" not in message  # a plugin author's fix, not theirs


@pytest.mark.no_leaks(blocking=False)
async def test_warn_mode_warns_and_off_mode_is_silent(png_url):
    laa.configure(laa.Config(guard="warn"))
    with pytest.warns(laa.BlockingAttachmentAccessWarning):
        llm.Attachment(url=png_url).resolve_type()
    laa.configure(laa.Config(guard="off"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert llm.Attachment(url=png_url).resolve_type() == "image/png"


async def test_worker_threads_are_never_affected(png_url):
    attachment = llm.Attachment(url=png_url)
    assert await asyncio.to_thread(attachment.resolve_type) == "image/png"
    assert await asyncio.to_thread(attachment.content_bytes) == samples.png()


def test_sync_code_without_a_loop_is_never_affected(png_url):
    assert llm.Attachment(url=png_url).content_bytes() == samples.png()


async def test_repr_never_raises_or_blocks(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(samples.png())
    assert repr(llm.Attachment(path=str(path))) == f'<Attachment: (unprepared) path="{path}">'


@pytest.mark.no_leaks(blocking=False)  # the inner detector is the subject here
async def test_control_pyleak_sees_llms_own_blocking_download(file_server):
    """The detector every async test runs under does catch a blocking fetch."""
    url = file_server.add("/slow.png", samples.png(), content_type="image/png", latency=0.3)
    laa.configure(laa.Config(guard="off"))
    with pytest.raises(pyleak.EventLoopBlockError):
        async with pyleak.no_event_loop_blocking(
            action="raise", threshold=0.1, check_interval=0.01
        ):
            llm.Attachment(url=url).content_bytes()


async def test_every_async_test_runs_under_pyleak_and_the_strict_guard(request):
    marker = request.node.get_closest_marker("no_leaks")
    assert marker is not None and marker.kwargs == {"blocking_threshold": 0.1}
    assert laa.get_config().guard == "strict"
