"""What an opted-in model sees: one AsyncAttachment view per attachment, wherever it appears."""

from __future__ import annotations

import copy

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.integration import views
from llm_async_attachments.testing import samples
from tests.support import LLM_HAS_MESSAGES


def png() -> llm.Attachment:
    return llm.Attachment(content=samples.png())


class Opted(llm.AsyncModel):
    """Records every attachment object it can reach, and where."""

    model_id = "opted"
    attachment_types = frozenset({"image/png"})
    can_stream = True
    supports_async_attachments = True

    def __init__(self) -> None:
        self.seen: list[list[object]] = []

    async def execute(self, prompt, stream, response, conversation=None):
        found = list(reachable(prompt))
        for earlier in conversation.responses if conversation else ():
            found += reachable(earlier.prompt)
            found += earlier.attachments
        self.seen.append(found)
        yield "ok"


def reachable(prompt):
    yield from prompt.attachments
    for message in getattr(prompt, "_explicit_messages", None) or ():
        for part in message.parts:
            if getattr(part, "attachment", None) is not None:
                yield part.attachment


async def test_a_long_conversation_shows_one_view_per_attachment_everywhere():
    model = laa.prepare_before_execute(Opted())
    conversation = model.conversation()
    sent = []
    for index in range(12):
        attachments = [png()] if index % 4 == 0 else []
        sent += attachments
        await conversation.prompt(f"turn {index}", attachments=attachments).text()
    last = model.seen[-1]
    assert all(type(seen) is laa.AsyncAttachment for seen in last)
    views_of = {}
    for view in last:
        views_of.setdefault(id(view._attachment), set()).add(id(view))
    assert all(len(ids) == 1 for ids in views_of.values())  # one view each, wherever it is
    assert set(views_of) == {id(a) for a in sent}
    # What the caller holds is untouched.
    for response in conversation.responses:
        assert all(type(a) is llm.Attachment for a in reachable(response.prompt))


@pytest.mark.skipif(not LLM_HAS_MESSAGES, reason="messages= prompts arrived in llm 0.36")
def test_a_rebuilt_chain_gets_views_of_its_own_attachments():
    from llm import parts

    def said(attachment):
        return parts.Message(role="user", parts=[parts.AttachmentPart(attachment=attachment)])

    first, twin = png(), png()
    assert first == twin
    closing = parts.Message(role="user", parts=[parts.TextPart(text="ok?")])
    echo = llm.get_async_model("echo")
    earlier = llm.Prompt(None, echo, messages=[said(first), closing])
    rebuilt = llm.Prompt(None, echo, messages=[said(twin), closing, said(png())])
    made = views.Views()
    made.prompt(earlier)
    seen = list(reachable(made.prompt(rebuilt)))
    assert len(seen) == 2 and seen[0]._attachment is twin
    assert seen[1]._attachment is rebuilt._explicit_messages[2].parts[0].attachment


def test_views_are_copies_as_copy_makes_them():
    echo = llm.get_async_model("echo")
    conversation = echo.conversation()
    response = conversation.prompt("hi")
    for original in (response, response.prompt, conversation):
        twin = views._copy(original)
        assert type(twin) is type(original) and twin is not original
        assert vars(twin) == vars(copy.copy(original))

    class Custom:
        def __init__(self):
            self.copies = 0

        def __copy__(self):
            made = Custom()
            made.copies = self.copies + 1
            return made

    assert views._copy(Custom()).copies == 1  # its own __copy__, as copy.copy() would
