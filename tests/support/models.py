"""Async test models that read attachments the way plugins do."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import llm


def every_attachment(prompt: Any, conversation: Any) -> list[Any]:
    """What a plugin building a full message history reads, earlier turns first, once each."""
    found: list[Any] = []
    for response in getattr(conversation, "responses", ()):
        found.extend(response.prompt.attachments)
    found.extend(prompt.attachments)
    for result in prompt.tool_results:
        found.extend(result.attachments)
    for message in getattr(prompt, "_explicit_messages", None) or ():
        found.extend(p.attachment for p in message.parts if getattr(p, "attachment", None))
    return list({id(a): a for a in found}.values())


class Reader(llm.AsyncModel):
    """A plugin as most are today: sync attachment reads inside async execute().

    A prompt ``"call NAME"`` makes it call the tool ``NAME`` first.
    """

    model_id = "reader"
    attachment_types = frozenset({"image/png", "image/gif", "application/pdf", "audio/wav"})
    supports_tools = True
    can_stream = True

    async def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any = None
    ) -> AsyncGenerator[str, None]:
        if prompt.prompt.startswith("call ") and not prompt.tool_results:
            response.add_tool_call(llm.ToolCall(name=prompt.prompt[5:], arguments={}))
            yield "calling"
            return
        attachments = every_attachment(prompt, conversation)
        self.kinds = {type(a).__name__ for a in attachments}
        yield json.dumps(
            [[a.resolve_type(), len(a.content_bytes()), a.id()[:12]] for a in attachments]
        )


class AsyncReader(llm.AsyncModel):
    """A plugin that opted in: it awaits AsyncAttachment reads."""

    model_id = "reader"
    attachment_types = Reader.attachment_types
    supports_tools = True
    can_stream = True
    supports_async_attachments = True

    async def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any = None
    ) -> AsyncGenerator[str, None]:
        attachments = every_attachment(prompt, conversation)
        self.kinds = {type(a).__name__ for a in attachments}
        yield json.dumps(
            [
                [await a.resolve_type(), len(await a.content_bytes()), (await a.id())[:12]]
                for a in attachments
            ]
        )


class Carrier(llm.AsyncModel):
    """A model whose prompts carry attachments of any type to ``prepare_attachments``
    (no ``attachment_types``: prepare then refuses no type). Never prompted itself."""

    model_id = "carrier"

    async def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any = None
    ) -> AsyncGenerator[str, None]:
        raise AssertionError("a carrier is never prompted")
        yield ""
