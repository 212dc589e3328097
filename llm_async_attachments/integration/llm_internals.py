"""The one module that names llm's private API, and checks it is what we expect.

llm offers no public hook before ``execute()`` and no public way to read an
attachment's cached id, so the package relies on five private names of llm
(docs/design.md says why each is needed and what upstream hook would let
us drop it):

========================================  ==========================================
``_BaseModel._validate_attachments``       the check ``model.prompt()`` runs, with a
                                           blocking ``HEAD``: deferred to prepare
``Attachment._id``                         an id given at construction, or cached
``Prompt._explicit_messages`` (>= 0.36)    a prompt's own ``messages=`` list
``Response._done``                         whether a response has finished
``llm.logs._canonical_attachment`` (0.36)  ``log_to_db()``'s read of a path's bytes
========================================  ==========================================

:func:`problems` checks each of them when the package installs (llm loading
its plugins); if any differs, the package stands down (``install``) rather
than break llm. Every other module reaches them through the functions here.

One private name of the standard library is read here too, with a safe
fallback: ``copy._copy_dispatch`` (see :func:`copies_plainly`).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import inspect
from collections.abc import Callable
from typing import Any

import llm

__all__ = [
    "VALIDATE_ATTACHMENTS",
    "attachment_id",
    "copies_plainly",
    "explicit_messages",
    "finished",
    "log_hasher",
    "new_attachment",
    "problems",
    "replace_log_hasher",
    "set_explicit_messages",
]

VALIDATE_ATTACHMENTS = "_validate_attachments"
"""The model method ``prompt()`` calls to check attachment types (it resolves each type)."""

_ID = "_id"
_EXPLICIT_MESSAGES = "_explicit_messages"
_DONE = "_done"
_CANONICAL_ATTACHMENT = "_canonical_attachment"


def attachment_id(attachment: Any) -> str | None:
    """The id an attachment was given, or cached by an earlier ``id()``; ``None`` if none."""
    value: str | None = getattr(attachment, _ID, None)
    return value


def new_attachment(
    type: str | None, path: str | None, url: str | None, content: bytes | None, id: str | None
) -> llm.Attachment:
    """``llm.Attachment(...)`` with its private ``_id`` given, as llm's own constructor takes it."""
    return llm.Attachment(type=type, path=path, url=url, content=content, **{_ID: id})


def explicit_messages(prompt: Any, default: Any = None) -> Any:
    """A prompt's own ``messages=`` list (llm >= 0.36), ``None`` if it was given none, or
    ``default`` if its llm has no such list."""
    return getattr(prompt, _EXPLICIT_MESSAGES, default)


def set_explicit_messages(prompt: Any, messages: list[Any]) -> None:
    """Give a (copied) prompt another ``messages=`` list."""
    setattr(prompt, _EXPLICIT_MESSAGES, messages)


def finished(response: Any) -> bool:
    """Whether ``response`` has finished (a running one may yet produce attachments)."""
    return getattr(response, _DONE, False) is True


def log_hasher() -> Callable[[Any], Any] | None:
    """llm >= 0.36's ``logs._canonical_attachment``, which opens path attachments; else ``None``."""
    logs = _logs_module()
    return None if logs is None else getattr(logs, _CANONICAL_ATTACHMENT, None)


def replace_log_hasher(function: Callable[[Any], Any]) -> None:
    """Put ``function`` in place of ``logs._canonical_attachment``."""
    logs = _logs_module()
    assert logs is not None  # only called with what log_hasher() found
    setattr(logs, _CANONICAL_ATTACHMENT, function)


def _logs_module() -> Any:
    if importlib.util.find_spec("llm.logs") is None:
        return None  # llm < 0.36: logging reads attachments through their methods
    import llm.logs

    return llm.logs


def copies_plainly(cls: type) -> bool:
    """Whether ``copy.copy()`` of a ``cls`` is a new instance given the same ``__dict__``.

    ``copy._copy_dispatch`` holds the types copied otherwise; without it (a
    future Python), the answer is ``False`` and ``copy.copy()`` is used.
    """
    dispatch = getattr(copy, "_copy_dispatch", None)
    customised = ("__copy__", "__getnewargs_ex__", "__getnewargs__", "__setstate__")
    base: Any = object
    return (
        dispatch is not None
        and cls not in dispatch
        and not any(hasattr(cls, name) for name in customised)
        and cls.__reduce_ex__ is base.__reduce_ex__
        and cls.__reduce__ is base.__reduce__
        and getattr(cls, "__getstate__", None) in (None, getattr(base, "__getstate__", None))
        and "__dict__" in dir(cls)
        and not any("__slots__" in vars(ancestor) for ancestor in cls.__mro__[:-1])
    )


def problems() -> list[str]:
    """What in the installed llm differs from what this package relies on; empty if nothing."""
    found = []
    validate = inspect.getattr_static(llm.AsyncModel, VALIDATE_ATTACHMENTS, None)
    if not inspect.isfunction(validate) or _parameters(validate) != ["self", "attachments"]:
        found.append(f"AsyncModel.{VALIDATE_ATTACHMENTS}(self, attachments) is missing or changed")
    fields = {field.name for field in dataclasses.fields(llm.Attachment)}
    if not {"type", "path", "url", "content", _ID} <= fields:
        found.append(f"Attachment's fields are not type, path, url, content and {_ID}")
    for name in ("resolve_type", "content_bytes", "base64_content", "id"):
        method = inspect.getattr_static(llm.Attachment, name, None)
        if not inspect.isfunction(method) or _parameters(method) != ["self"]:
            found.append(f"Attachment.{name}(self) is missing or changed")
    if not _sets(llm.Response, _DONE):
        found.append(f"Response no longer sets {_DONE}")
    prompt_parameters = _parameters(llm.Prompt.__init__)
    if "messages" in prompt_parameters and not _sets(llm.Prompt, _EXPLICIT_MESSAGES):
        found.append(f"Prompt(messages=...) no longer keeps them as {_EXPLICIT_MESSAGES}")
    if _logs_module() is not None:
        hasher = log_hasher()
        if not callable(hasher) or len(_parameters(hasher)) != 1:
            found.append(f"llm.logs.{_CANONICAL_ATTACHMENT}(attachment) is missing or changed")
    return found


def _parameters(function: Callable[..., Any]) -> list[str]:
    try:
        return list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return []


def _sets(cls: type, attribute: str) -> bool:
    """Whether an ``__init__`` in ``cls``'s MRO assigns ``attribute`` (read from its code)."""
    for ancestor in cls.__mro__:
        init = vars(ancestor).get("__init__")
        code = getattr(init, "__code__", None)
        if code is not None and attribute in code.co_names:
            return True
    return False
