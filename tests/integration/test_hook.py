"""The pre-execute hook: registry models, hand-built models and opted-in plugins."""

from __future__ import annotations

import asyncio
import json
from unittest.mock import ANY

import llm
import pytest
import sqlite_utils
from llm.migrations import migrate

import llm_async_attachments as laa
from llm_async_attachments.integration import guard, hook
from llm_async_attachments.testing import samples
from tests.support import LLM_HAS_MESSAGES
from tests.support.models import AsyncReader, Reader


@pytest.fixture
def png_url(file_server):
    return file_server.add("/cat.png", samples.png(), content_type="image/png", latency=0.2)


@pytest.fixture
def pdf_url(file_server):
    return file_server.add("/doc.pdf", samples.pdf(), content_type="application/pdf", latency=0.2)


async def test_prompt_on_a_registry_model_does_no_io_until_awaited(file_server, png_url):
    model = llm.get_async_model("echo")
    response = model.prompt("hi", attachments=[llm.Attachment(url=png_url)])
    assert file_server.count() == 0  # llm alone does a blocking HEAD right here
    output = json.loads(await response.text())
    assert output["attachments"][0]["url"] == png_url
    assert file_server.requests == [("GET", "/cat.png")]


async def test_an_unsupported_url_type_raises_llms_own_error_on_await(file_server, pdf_url):
    model = llm.get_async_model("echo")
    expected = await asyncio.to_thread(llm_alone_error, model, pdf_url)
    file_server.requests.clear()
    response = model.prompt("hi", attachments=[llm.Attachment(url=pdf_url)])
    with pytest.raises(ValueError) as caught:
        await response.text()
    assert str(caught.value) == expected
    assert "This model does not support attachments of type 'application/pdf'" in expected


async def test_a_deferred_type_check_passed_for_one_model_is_still_made_for_another(pdf_url):
    pdf = llm.Attachment(url=pdf_url)
    takes_pdf = laa.prepare_before_execute(Reader()).prompt("one", attachments=[pdf])
    refuses_pdf = llm.get_async_model("echo").prompt("two", attachments=[pdf])
    await takes_pdf.text()  # made before either ran: both checks were deferred
    with pytest.raises(ValueError, match="does not support attachments of type"):
        await refuses_pdf.text()


def llm_alone_error(model, url) -> str:
    """llm's own check, run on a worker thread where its blocking HEAD is harmless."""
    try:
        llm.AsyncModel._validate_attachments(model, [llm.Attachment(url=url)])  # unwrapped
    except ValueError as error:
        return str(error)
    raise AssertionError("llm accepted the attachment")


async def test_checks_that_need_no_io_still_fail_at_once():
    model = llm.get_async_model("echo")
    with pytest.raises(ValueError, match="does not support attachments of type 'text/csv'"):
        model.prompt(
            "hi", attachments=[llm.Attachment(url="http://127.0.0.1:9/x", type="text/csv")]
        )
    with pytest.raises(ValueError, match="does not support attachments of type 'application/pdf'"):
        model.prompt("hi", attachments=[llm.Attachment(content=samples.pdf())])


async def test_a_plain_plugin_reads_prepared_attachments_under_the_strict_guard(
    file_server, png_url, pdf_url, tmp_path
):
    path = tmp_path / "d.gif"
    path.write_bytes(samples.gif())
    model = laa.prepare_before_execute(Reader())
    conversation = model.conversation()
    first = [llm.Attachment(url=png_url), llm.Attachment(path=str(path))]
    turns = [json.loads(await conversation.prompt("one", attachments=first).text())]
    turns.append(
        json.loads(
            await conversation.prompt("two", attachments=[llm.Attachment(url=pdf_url)]).text()
        )
    )
    turns.append(json.loads(await conversation.prompt("three").text()))
    assert [len(t) for t in turns] == [2, 3, 3]
    assert turns[2] == [
        ["image/png", len(samples.png()), first[0].id()[:12]],
        ["image/gif", len(samples.gif()), first[1].id()[:12]],
        ["application/pdf", len(samples.pdf()), turns[1][2][2]],
    ]
    assert model.kinds == {"Attachment"}
    assert sorted(file_server.requests) == [("GET", "/cat.png"), ("GET", "/doc.pdf")]


async def test_opted_in_plugins_see_async_attachments_everywhere(file_server, png_url, pdf_url):
    model = laa.prepare_before_execute(AsyncReader())
    conversation = model.conversation()
    first = llm.Attachment(url=png_url)
    await conversation.prompt("one", attachments=[first]).text()
    tool_attachment = llm.Attachment(content=samples.gif())
    extra, expected_types = {}, {"image/gif"}
    if LLM_HAS_MESSAGES:  # llm >= 0.36: attachment parts of messages=
        from llm import parts

        in_message = llm.Attachment(url=pdf_url)
        part = parts.AttachmentPart(attachment=in_message)
        extra["messages"] = [parts.Message(role="user", parts=[part])]
        expected_types.add("application/pdf")
    response = model.prompt(
        "x", tool_results=[llm.ToolResult("t", "out", [tool_attachment])], **extra
    )
    seen = json.loads(await response.text())
    assert model.kinds == {"AsyncAttachment"}
    assert {row[0] for row in seen} == expected_types
    later = json.loads(await conversation.prompt("two").text())
    assert later[0][0] == "image/png" and model.kinds == {"AsyncAttachment"}
    # What the caller passed in is untouched.
    assert conversation.responses[0].prompt.attachments == [first]
    assert type(conversation.responses[0].prompt.attachments[0]) is llm.Attachment
    assert type(response.prompt.tool_results[0].attachments[0]) is llm.Attachment
    if LLM_HAS_MESSAGES:
        assert type(response.prompt.messages[0].parts[0].attachment) is llm.Attachment


async def test_logs_are_exactly_what_llm_writes_without_the_plugin(tmp_path):
    path = tmp_path / "d.gif"
    path.write_bytes(samples.gif())

    def attachments():
        return [llm.Attachment(path=str(path)), llm.Attachment(content=samples.png())]

    databases = []
    for model in (Reader(), laa.prepare_before_execute(AsyncReader())):
        laa.configure(laa.Config(guard="off" if type(model) is Reader else "strict"))
        conversation = model.conversation()
        responses = [
            conversation.prompt("one", attachments=attachments()),
            conversation.prompt("two"),
        ]
        for response in responses:
            await response.text()
        ids = [r.id for r in responses] + [conversation.id]
        # llm < 0.36 has no AsyncResponse.log_to_db(); 0.36's does exactly this conversion.
        logged = [await r.to_sync_response() for r in responses]
        databases.append(await asyncio.to_thread(log_and_dump, logged, ids))
    assert databases[0] == databases[1]
    assert databases[0]["attachments"]


def log_and_dump(responses, ids) -> dict:
    """Log to a new database (on a worker thread: sqlite blocks) and dump every row,
    with per-run ids and timestamps made neutral."""
    db = sqlite_utils.Database(memory=True)
    migrate(db)
    for response in responses:
        response.log_to_db(db)
    tables = {}
    for table in db.table_names():
        rows = []
        for row in db[table].rows:
            for column in ("datetime_utc", "duration_ms", "applied_at"):
                row.pop(column, None)
            text = json.dumps(row, sort_keys=True, default=repr)
            for index, value in enumerate(ids):
                text = text.replace(value, f"<id {index}>")
            rows.append(text)
        tables[table] = sorted(rows)
    return tables


async def test_tool_results_carrying_url_attachments_are_prepared_in_a_chain(file_server, png_url):
    def snapshot() -> llm.ToolOutput:
        """Take a picture."""
        return llm.ToolOutput("taken", attachments=[llm.Attachment(url=png_url)])

    model = laa.prepare_before_execute(Reader())
    chain = model.chain("call snapshot", tools=[snapshot])
    texts = [await response.text() async for response in chain.responses()]
    assert texts[0] == "calling"
    assert json.loads(texts[1]) == [["image/png", len(samples.png()), ANY]]
    assert file_server.requests == [("GET", "/cat.png")]


@pytest.mark.skipif(not LLM_HAS_MESSAGES, reason="messages= prompts arrived in llm 0.36")
async def test_messages_prompts_are_prepared(file_server, png_url):
    from llm import parts

    part = parts.AttachmentPart(attachment=llm.Attachment(url=png_url))
    model = llm.get_async_model("echo")
    response = model.prompt(messages=[parts.Message(role="user", parts=[part])])
    await response.text()
    assert file_server.requests == [("GET", "/cat.png")]


async def test_concurrent_prompts_on_one_conversation_fetch_once(file_server, pdf_url):
    model = laa.prepare_before_execute(Reader())
    conversation = model.conversation()
    shared = llm.Attachment(url=pdf_url)
    responses = [conversation.prompt(f"p{i}", attachments=[shared]) for i in range(4)]
    outputs = await asyncio.gather(*(r.text() for r in responses))
    rows = [row for output in outputs for row in json.loads(output)]
    assert {tuple(row) for row in rows} == {("application/pdf", 440, rows[0][2])}
    assert file_server.requests == [("GET", "/doc.pdf")]


async def test_wrapping_is_idempotent_and_keeps_the_model_itself(monkeypatch, png_url):
    calls = []
    original = hook.prepare_for

    async def counting(*args, **kwargs):
        calls.append(args[0])
        return await original(*args, **kwargs)

    monkeypatch.setattr(hook, "prepare_for", counting)
    model = llm.get_async_model("echo")
    assert laa.prepare_before_execute(model) is model
    assert type(model).__name__ == "EchoAsync" and model.model_id == "echo"
    wrapped_execute = model.execute

    def another_plugins_wrapper(*args, **kwargs):
        return wrapped_execute(*args, **kwargs)

    model.execute = another_plugins_wrapper  # another plugin re-wraps the model
    laa.prepare_before_execute(model)
    await model.prompt("hi", attachments=[llm.Attachment(url=png_url)]).text()
    assert len(calls) == 1


def test_sync_models_and_the_cli_are_untouched():
    model = llm.get_model("echo")
    assert "execute" not in vars(model)
    with pytest.raises(TypeError, match="not an llm async model"):
        laa.prepare_before_execute(model)


async def test_the_class_decorator_wraps_every_instance(file_server, png_url):
    @laa.prepare_before_execute
    class Decorated(Reader):
        model_id = "decorated"

    assert laa.prepare_before_execute(Decorated) is Decorated
    output = json.loads(
        await Decorated().prompt("x", attachments=[llm.Attachment(url=png_url)]).text()
    )
    assert output[0][0] == "image/png"
    assert file_server.requests == [("GET", "/cat.png")]


async def test_attachment_errors_surface_from_the_awaited_response(file_server):
    model = llm.get_async_model("echo")
    response = model.prompt(
        "x", attachments=[llm.Attachment(url=file_server.url("/status/404"), type="image/png")]
    )
    with pytest.raises(laa.AttachmentHTTPStatusError, match="HTTP 404"):
        await response.text()


class Watcher(llm.AsyncModel):
    """Streams three chunks, noting whether the guard's execution mark is on each time."""

    model_id = "watcher"
    can_stream = True

    def __init__(self, seen: list) -> None:
        self.seen = seen

    async def execute(self, prompt, stream, response, conversation=None):
        try:
            for index in range(3):
                self.seen.append(("model", guard.EXECUTING.get()))
                yield str(index)
        finally:
            self.seen.append(("model's finally", guard.EXECUTING.get()))


async def test_the_guard_marks_the_models_code_only_not_the_callers_between_chunks():
    seen = []
    model = laa.prepare_before_execute(Watcher(seen))
    async for _ in model.prompt("x"):
        seen.append(("caller", guard.EXECUTING.get()))
    assert seen == [
        ("model", True),
        ("caller", False),
        ("model", True),
        ("caller", False),
        ("model", True),
        ("caller", False),
        ("model's finally", True),
    ]
    assert guard.EXECUTING.get() is False


async def test_a_model_stopped_early_runs_its_finally_inside_the_mark():
    seen = []
    model = laa.prepare_before_execute(Watcher(seen))
    prompt = llm.Prompt("x", model)
    stream = model.execute(prompt, True, llm.AsyncResponse(prompt, model, True))
    assert await anext(stream) == "0"
    await stream.aclose()  # what llm does when a caller stops reading
    assert seen == [("model", True), ("model's finally", True)]
    assert guard.EXECUTING.get() is False and hook._running.get() == frozenset()
