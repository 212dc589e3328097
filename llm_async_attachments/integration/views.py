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

from . import llm_internals
from .async_attachment import AsyncAttachment, to_async
from .history import extend_if_continued


class Views:
    """Views for one ``execute()`` call: each attachment gets one view object,
    wherever it appears, so identity comparisons in the plugin keep working."""

    def __init__(self) -> None:
        self._views: dict[int, tuple[Any, AsyncAttachment]] = {}
        # The last message chain viewed: its messages, their views, where they differ.
        self._last_chain: tuple[list[Any], list[Any], list[int]] | None = None

    def attachment(self, attachment: Any) -> AsyncAttachment:
        known = self._views.get(id(attachment))
        if known is None:
            # The original is kept alongside so its id() cannot be reused.
            known = self._views[id(attachment)] = (attachment, to_async(attachment))
        return known[1]

    def prompt(self, prompt: Any) -> Any:
        """A shallow copy of ``prompt`` whose attachments, tool results and messages are views."""
        view = _copy(prompt)
        view.attachments = [self.attachment(a) for a in prompt.attachments or ()]
        view.tool_results = [self._tool_result(r) for r in prompt.tool_results or ()]
        explicit = llm_internals.explicit_messages(prompt)  # llm >= 0.36, messages=
        if explicit is not None:
            llm_internals.set_explicit_messages(view, self._chain(explicit))
        return view

    def conversation(self, conversation: Any) -> Any:
        """A shallow copy of ``conversation`` whose earlier responses hold prompt views."""
        if conversation is None:
            return None
        view = _copy(conversation)
        view.responses = [self._response(r) for r in conversation.responses]
        return view

    def _response(self, response: Any) -> Any:
        view = _copy(response)
        view.prompt = self.prompt(response.prompt)
        view.attachments = [self.attachment(a) for a in getattr(response, "attachments", ())]
        return view

    def _tool_result(self, result: Any) -> Any:
        if not getattr(result, "attachments", None):
            return result
        return dataclasses.replace(
            result, attachments=[self.attachment(a) for a in result.attachments]
        )

    def _chain(self, messages: list[Any]) -> list[Any]:
        """Views of a message chain, as a new list.

        With llm >= 0.36 every earlier response's prompt holds the whole chain
        before it, and each chain starts with the one before it, the same
        message objects: the views made for that one are reused, and only the
        messages after it are looked at. "Starts with" is checked as the history
        walker checks it (``extend_if_continued``): equal messages, and the very
        same objects where a view replaced one.
        """
        last = self._last_chain
        if last is not None:
            originals, views, replaced = last
            size = extend_if_continued(originals, messages, replaced)
            if size is not None:
                tail = [self._message(m) for m in messages[size:]]
                replaced = replaced + [
                    size + index for index, m in enumerate(tail) if m is not messages[size + index]
                ]
                views = views + tail
                self._last_chain = (originals, views, replaced)
                return views
        views = [self._message(m) for m in messages]
        replaced = [index for index, m in enumerate(views) if m is not messages[index]]
        self._last_chain = (list(messages), views, replaced)
        return views

    def _message(self, message: Any) -> Any:
        for part in message.parts:
            if getattr(part, "attachment", None) is not None or getattr(part, "attachments", None):
                return dataclasses.replace(message, parts=[self._part(p) for p in message.parts])
        return message

    def _part(self, part: Any) -> Any:
        changes: dict[str, Any] = {}
        if getattr(part, "attachment", None) is not None:
            changes["attachment"] = self.attachment(part.attachment)
        if getattr(part, "attachments", None):
            changes["attachments"] = [self.attachment(a) for a in part.attachments]
        return dataclasses.replace(part, **changes) if changes else part


def _copy(original: Any) -> Any:
    """``copy.copy(original)``; for a plain class (llm's prompts, responses and
    conversations), the same result without ``copy``'s generic machinery: a view
    is made of every earlier response of a conversation, on every turn."""
    cls: Any = type(original)
    plain = _plain.get(cls)
    if plain is None:
        plain = _plain[cls] = llm_internals.copies_plainly(cls)
    if not plain:
        return copy.copy(original)
    twin = cls.__new__(cls)
    twin.__dict__.update(original.__dict__)
    return twin


_plain: dict[type, bool] = {}
