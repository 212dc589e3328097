"""What each model reads of its attachments, learned from what its ``execute()`` did.

Plugins differ: llm-echo reads no attachment content at all, llm's OpenAI
models send history image URLs on as URLs but read history PDFs, llm-gemini
inlines everything. Preparing every attachment of a long conversation every
turn would read (or download) the whole history again. Instead, the guard
reports every read a model makes during ``execute()`` (:meth:`Execution.saw`),
and when an ``execute()`` finishes, what was offered and what was read is
remembered per model class, attachment type and place (the prompt's own
attachments, or the history's). The next prepare for that model then
prepares exactly that: the content, its base64 text too, or neither.

Until a kind of attachment has been seen, everything is prepared (the safe
default). A read that was not prepared still succeeds (see the guard) and is
remembered, so reads that change between turns cost one slow read, once.
Only finished executions teach "not read": one that failed or was cancelled
part-way may not have reached its reads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextvars import ContextVar
from typing import Any, Literal

from ..core.needs import Need, Place
from ..store.state import same_fields

__all__ = ["WATCHING", "Execution", "Method", "current", "forget", "model_key", "need"]

Method = Literal["content", "base64"]
_NOTHING = Need(content=False, base64=False)
_LIMIT = 4096  # kinds remembered; a server inventing types cannot grow this without end

_Kind = tuple[str, str | None, Place]
_learned: OrderedDict[_Kind, Need] = OrderedDict()
_lock = threading.Lock()


def forget() -> None:
    """Forget every model's reads learned so far (the test kit, between tests)."""
    with _lock:
        _learned.clear()


def model_key(model: object) -> str:
    """What reads are learned per: the model's class, by its full name."""
    kind = type(model)
    return f"{kind.__module__}.{kind.__qualname__}"


def need(model: str, content_type: str | None, place: Place) -> Need | None:
    """What ``model`` was seen to read of this kind of attachment; ``None``: never seen."""
    return _learned.get((model, content_type, place))


def _learn(kind: _Kind, read: set[Method], *, finished: bool) -> None:
    known = _learned.get(kind)
    content = "content" in read or "base64" in read or bool(known and known.content)
    base64 = "base64" in read or bool(known and known.base64)
    if not finished and known is None and not read:
        return  # "not read" is learned only from an execute that finished
    learned = _NOTHING if not (content or base64) else Need(content, base64)
    if known == learned:
        return
    with _lock:
        _learned[kind] = learned
        _learned.move_to_end(kind)
        while len(_learned) > _LIMIT:
            _learned.popitem(last=False)


class Execution:
    """One ``execute()`` of one model: the attachments it was offered, and what it read."""

    __slots__ = ("_offered", "_read", "model")

    def __init__(self, model: str) -> None:
        self.model = model
        self._offered: dict[int, tuple[Any, Place]] = {}
        self._read: dict[int, set[Method]] = {}

    def offer(self, attachment: Any, place: Place) -> None:
        """The model is given ``attachment``, from this place."""
        self._offered.setdefault(id(attachment), (attachment, place))

    def offered(self, attachment: object) -> bool:
        """Whether the model was given ``attachment`` in this execution."""
        entry = self._offered.get(id(attachment))
        return entry is not None and entry[0] is attachment

    def copied(self, attachment: Any) -> Any:
        """The attachment offered to this execution that ``attachment`` is a copy of (the
        same class, type, path, URL and content), or ``None``: a plugin that copies a
        prepared attachment in ``execute()`` reads the copy as the original."""
        for offered, _place in self._offered.values():
            if type(offered) is type(attachment) and same_fields(offered, attachment):
                return offered
        return None

    def saw(self, attachment: object, method: Method) -> None:
        """The model read ``method`` of ``attachment``."""
        if self.offered(attachment):
            self._read.setdefault(id(attachment), set()).add(method)

    def finish(self, types: dict[int, str | None], *, finished: bool) -> None:
        """Remember what was read, by kind; ``types``: each offered attachment's type."""
        by_kind: dict[_Kind, set[Method]] = {}
        for key, (_attachment, place) in self._offered.items():
            kind = (self.model, types.get(key), place)
            by_kind.setdefault(kind, set()).update(self._read.get(key, ()))
        for kind, read in by_kind.items():
            _learn(kind, read, finished=finished)


WATCHING: ContextVar[Execution | None] = ContextVar("llm_async_attachments_execution", default=None)
"""The execution whose model code is running now, if any (set by the hook)."""


def current() -> Execution | None:
    """The execution whose model code is running now, if any."""
    return WATCHING.get()
