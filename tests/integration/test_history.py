"""Long conversations: what earlier turns hold is found once, and stays right when edited.

``collect()`` remembers, per conversation, what finished responses hold and
the message chain it read last. These tests hold it to the plain definition
(``every_attachment`` below: walk everything, every time) through edits of
``conversation.responses``, rebuilt message chains and unfinished responses,
and check that nothing it remembers keeps a conversation alive.
"""

from __future__ import annotations

import contextlib
import gc
import json
import random
import weakref

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.integration import history
from llm_async_attachments.testing import samples
from tests.support import LLM_HAS_MESSAGES
from tests.support.models import Reader


def every_attachment(prompt, conversation=None) -> list:
    """The definition: each attachment object once, in order, walking everything."""
    found: dict[int, object] = {}

    def add(attachment):
        if attachment is not None:
            found.setdefault(id(attachment), attachment)

    def from_prompt(source):
        for attachment in getattr(source, "attachments", None) or ():
            add(attachment)
        for result in getattr(source, "tool_results", None) or ():
            for attachment in result.attachments or ():
                add(attachment)
        for message in getattr(source, "_explicit_messages", None) or ():
            for part in message.parts:
                add(getattr(part, "attachment", None))
                for attachment in getattr(part, "attachments", None) or ():
                    add(attachment)

    for response in getattr(conversation, "responses", ()):
        from_prompt(response.prompt)
        for attachment in getattr(response, "attachments", None) or ():
            add(attachment)
    from_prompt(prompt)
    return list(found.values())


def png() -> llm.Attachment:
    """A new attachment object that needs no I/O to prepare."""
    return llm.Attachment(content=samples.png())


@pytest.fixture
def echo():
    return llm.get_async_model("echo")


async def turn(conversation, text: str, *attachments) -> llm.AsyncResponse:
    response = conversation.prompt(text, attachments=list(attachments))
    await response.text()
    return response


def same(found: list, expected: list) -> bool:
    return [id(a) for a in found] == [id(a) for a in expected]


async def test_every_turn_finds_what_every_earlier_turn_holds(echo):
    conversation = echo.conversation()
    for index in range(30):
        attachments = [png()] if index % 7 == 0 else []
        await turn(conversation, f"turn {index}", *attachments)
        following = conversation.prompt("next").prompt
        found = history.collect(following, conversation)
        assert same(found, every_attachment(following, conversation))
    assert len(found) == 5


@pytest.mark.parametrize("collector", ["off", "before every step"])
async def test_edits_of_the_responses_list_are_seen_at_once(echo, collector):
    """Checked against the responses held (the collector off), and against the weak
    proxies alone (every collection, of the youngest objects here to keep it quick,
    lets go of what was held)."""
    conversation, elsewhere = echo.conversation(), echo.conversation()
    spare = [await turn(elsewhere, f"spare {i}", png()) for i in range(4)]
    rng = random.Random(12)
    held = []
    with collector_off() if collector == "off" else contextlib.nullcontext():
        for step in range(60):
            if collector != "off":
                gc.collect(0)
            held.append(bool(history._held))  # what the step's check will use
            await one_edit(rng, echo, conversation, spare, step)
    assert any(held) if collector == "off" else not any(held)


async def one_edit(rng, echo, conversation, spare, step):
    responses = conversation.responses
    edit = rng.choice(["turn", "turn", "pop", "insert", "replace", "reverse", "new list"])
    if edit == "turn" or not responses:
        await turn(conversation, f"step {step}", *([png()] if rng.random() < 0.5 else []))
    elif edit == "pop":
        responses.pop(rng.randrange(len(responses)))
    elif edit == "insert":
        responses.insert(rng.randrange(len(responses) + 1), rng.choice(spare))
    elif edit == "replace":
        responses[rng.randrange(len(responses))] = rng.choice(spare)
    elif edit == "reverse":
        responses.reverse()
    else:
        conversation.responses = list(responses[: len(responses) // 2])
    prompt = llm.Prompt("now", echo, attachments=[png()])
    assert same(history.collect(prompt, conversation), every_attachment(prompt, conversation))


@contextlib.contextmanager
def collector_off():
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_response_still_running_is_read_again_next_turn(echo):
    conversation = echo.conversation()
    await turn(conversation, "one", png())
    running = llm.AsyncResponse(llm.Prompt("two", echo), echo, stream=False)
    conversation.responses.append(running)
    prompt = llm.Prompt("three", echo)
    assert len(history.collect(prompt, conversation)) == 1
    produced = png()
    running.attachments.append(produced)  # as a response producing an image would
    found = history.collect(prompt, conversation)
    assert same(found, every_attachment(prompt, conversation)) and found[-1] is produced


async def test_a_removed_response_that_dies_is_not_mistaken_for_a_new_one(echo):
    conversation = echo.conversation()
    for index in range(3):
        await turn(conversation, f"turn {index}", png())
    prompt = llm.Prompt("now", echo)
    history.collect(prompt, conversation)
    del conversation.responses[1]
    gc.collect()  # the removed response is gone; its id may be reused
    await turn(conversation, "again", png())
    assert same(history.collect(prompt, conversation), every_attachment(prompt, conversation))


@pytest.mark.skipif(not LLM_HAS_MESSAGES, reason="messages= prompts arrived in llm 0.36")
async def test_a_rebuilt_history_of_equal_messages_is_read_for_its_own_attachments(echo):
    from llm import parts

    def said(attachment):
        return parts.Message(role="user", parts=[parts.AttachmentPart(attachment=attachment)])

    first, twin = png(), png()
    assert first == twin and first is not twin  # equal, but prepared separately
    conversation = echo.conversation()
    closing = parts.Message(role="user", parts=[parts.TextPart(text="ok?")])
    await turn(conversation, "hello")
    await conversation.prompt(messages=[said(first), closing]).text()
    assert history._History.of(conversation).chain.messages[-1] is closing
    # The same history rebuilt from stored data: an equal first message holding a
    # new attachment object, then (the hardest case) the very same last message.
    rebuilt = llm.Prompt(None, echo, messages=[said(twin), closing, said(png())])
    found = history.collect(rebuilt, conversation)
    assert any(a is twin for a in found)
    assert same(found, every_attachment(rebuilt, conversation))


@pytest.mark.skipif(not LLM_HAS_MESSAGES, reason="messages= prompts arrived in llm 0.36")
async def test_a_shared_history_is_read_from_where_it_was_read_last(echo):
    conversation = echo.conversation()
    for index in range(5):
        await turn(conversation, f"turn {index}", png())
    remembered = history._History.of(conversation)
    assert remembered is not None and len(remembered.responses) == 4  # those before turn 5
    last_chain = remembered.chain  # turn 5's
    following = conversation.prompt("next").prompt
    history.collect(following, conversation)
    assert len(remembered.responses) == 5
    assert remembered.chain is not last_chain
    assert remembered.chain.messages is last_chain.messages  # extended, not read again
    assert remembered.chain.marked == last_chain.marked  # the new turn added no attachment


async def test_what_is_remembered_keeps_no_conversation_alive(echo):
    conversation = echo.conversation()
    for index in range(3):
        await turn(conversation, f"turn {index}", png())
    history.collect(llm.Prompt("now", echo), conversation)
    key, gone = id(conversation), weakref.ref(conversation)
    assert key in history._histories
    del conversation
    gc.collect()
    assert gone() is None
    assert key not in history._histories


async def test_conversations_without_weak_references_are_walked_in_full(echo):
    class Frozen:
        __slots__ = ("responses",)

    conversation = echo.conversation()
    await turn(conversation, "one", png())
    plain = Frozen()
    plain.responses = conversation.responses
    prompt = llm.Prompt("now", echo, attachments=[png()])
    assert same(history.collect(prompt, plain), every_attachment(prompt, plain))


async def test_an_earlier_turns_attachment_changed_since_is_prepared_again(file_server):
    png_url = file_server.add("/cat.png", samples.png(), content_type="image/png")
    gif_url = file_server.add("/dog.gif", samples.gif(), content_type="image/gif")
    model = laa.prepare_before_execute(Reader())
    conversation = model.conversation()
    attachment = llm.Attachment(url=png_url)
    await conversation.prompt("one", attachments=[attachment]).text()
    attachment.url = gif_url  # remembered as an object: its state says it changed
    seen = json.loads(await conversation.prompt("two").text())
    assert seen[0][:2] == ["image/gif", len(samples.gif())]
    assert file_server.requests == [("GET", "/cat.png"), ("GET", "/dog.gif")]
