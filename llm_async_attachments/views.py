"""What an opted-in model sees during ``execute()``: AsyncAttachment views everywhere.

A model that sets ``supports_async_attachments = True`` is handed copies of
the prompt and conversation in which every attachment is an
:class:`AsyncAttachment` sharing the original's cache. The caller's objects,
and so what llm logs, are never changed.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from .attachment import AsyncAttachment, to_async


class Views:
    """Views for one ``execute()`` call: each attachment gets one view object,
    wherever it appears, so identity comparisons in the plugin keep working."""

    def __init__(self) -> None:
        self._views: dict[int, tuple[Any, AsyncAttachment]] = {}

    def attachment(self, attachment: Any) -> AsyncAttachment:
        known = self._views.get(id(attachment))
        if known is None:
            # The original is kept alongside so its id() cannot be reused.
            known = self._views[id(attachment)] = (attachment, to_async(attachment))
        return known[1]

    def prompt(self, prompt: Any) -> Any:
        """A shallow copy of ``prompt`` whose attachments, tool results and messages are views."""
        view = copy.copy(prompt)
        view.attachments = [self.attachment(a) for a in prompt.attachments or ()]
        view.tool_results = [self._tool_result(r) for r in prompt.tool_results or ()]
        explicit = getattr(prompt, "_explicit_messages", None)  # llm >= 0.36, messages=
        if explicit is not None:
            view._explicit_messages = [self._message(m) for m in explicit]
        return view

    def conversation(self, conversation: Any) -> Any:
        """A shallow copy of ``conversation`` whose earlier responses hold prompt views."""
        if conversation is None:
            return None
        view = copy.copy(conversation)
        view.responses = [self._response(r) for r in conversation.responses]
        return view

    def _response(self, response: Any) -> Any:
        view = copy.copy(response)
        view.prompt = self.prompt(response.prompt)
        view.attachments = [self.attachment(a) for a in getattr(response, "attachments", ())]
        return view

    def _tool_result(self, result: Any) -> Any:
        if not getattr(result, "attachments", None):
            return result
        return dataclasses.replace(
            result, attachments=[self.attachment(a) for a in result.attachments]
        )

    def _message(self, message: Any) -> Any:
        return dataclasses.replace(message, parts=[self._part(p) for p in message.parts])

    def _part(self, part: Any) -> Any:
        changes: dict[str, Any] = {}
        if getattr(part, "attachment", None) is not None:
            changes["attachment"] = self.attachment(part.attachment)
        if getattr(part, "attachments", None):
            changes["attachments"] = [self.attachment(a) for a in part.attachments]
        return dataclasses.replace(part, **changes) if changes else part
