"""Finding a prompt's attachments, and remembering a conversation's between turns."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from . import llm_internals

__all__ = ["collect", "extend_if_continued"]


def collect(prompt: Any, conversation: Any = None) -> list[Any]:
    """Every attachment a model may read for this prompt, each object once, in order.

    The earlier responses of ``conversation`` first (each response's prompt,
    then the attachments it produced), then ``prompt``; in a prompt, its
    attachments, its tool results' and those of its message parts (llm >=
    0.36 passes a conversation's whole history as the prompt's ``messages=``).

    What the package adds to a turn does not grow with the conversation:
    what finished responses hold is found once and remembered for their
    conversation (:class:`_History`), and a message chain that extends the
    one read last is read from where that one ended (:class:`_Chain`).
    """
    found = _Found()
    responses = getattr(conversation, "responses", None) or ()
    history = _History.of(conversation) if responses else None
    if history is None:
        chain = None
        for response in responses:
            chain = _add_response(found, response, chain)
        _add_prompt(found, prompt, chain)
        return found.items
    with history.lock:
        remembered = history.check(responses)
        found.extend(history.found.items)
        # Reading uses the chain up; it is history's again only once all went well.
        chain, history.chain = history.chain, None
        settling = True
        for response in responses[remembered:]:
            chain = _add_response(found, response, chain)
            settling = settling and history.settle(response)
            if settling:
                history.found.extend(found.items[len(history.found.items) :])
        history.chain = _add_prompt(found, prompt, chain)
    return found.items


class _Found:
    """Attachments in the order first seen, each object once (held, so ids stay theirs)."""

    __slots__ = ("ids", "items")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.ids: set[int] = set()

    def add(self, attachment: Any) -> None:
        if attachment is not None and id(attachment) not in self.ids:
            self.ids.add(id(attachment))
            self.items.append(attachment)

    def extend(self, attachments: Iterable[Any]) -> None:
        for attachment in attachments:
            self.add(attachment)


class _Chain:
    """A prompt's message chain as read: its messages, and what those held.

    llm >= 0.36 builds each turn's chain from the last response's (its
    messages, the same objects, then the new ones), so a chain that starts
    with the one read last is read from where that one ended. "Starts with"
    is checked in full, at C speed, without touching the messages themselves
    (a slice or a copy would touch every one, and a long conversation's are
    no longer in the CPU's caches): the list read last is extended with the
    new messages, in place, and compared with the new chain whole (``==``
    passes over the same objects unread). Where the last chain held
    attachments the very same message objects are required: a message equal
    to one without attachments has none either, but one equal to a message
    with attachments may hold other attachment objects. Messages are held,
    never changed: a message already sent is not edited. Nor is a prompt's
    own list of them (llm copies ``messages=`` into
    ``Prompt._explicit_messages`` and never changes it): met again (the next
    turn, as the last response's prompt), it is the chain read, unlooked at.
    """

    __slots__ = ("found", "marked", "messages", "source")

    def __init__(
        self, source: object, messages: list[Any], marked: list[int], found: _Found
    ) -> None:
        self.source = source  # the prompt's own list, or None
        self.messages = messages  # a list of this chain's own, of the same messages
        self.marked = marked
        self.found = found

    @classmethod
    def read(cls, messages: Sequence[Any], last: _Chain | None, *, owned: bool) -> _Chain:
        """The chain of ``messages``, read from the end of ``last`` if it starts with it.

        ``owned``: ``messages`` is a prompt's own list, which never changes.
        ``last`` is used up: its list may become the new chain's.
        """
        if last is not None and owned and messages is last.source:
            return last
        found, marked = _Found(), []
        start = last.extend_to(messages) if last is not None else None
        if last is not None and start is not None:
            mine, marked = last.messages, list(last.marked)
            found.extend(last.found.items)
        else:
            mine, start = list(messages), 0
        for index in range(start, len(messages)):
            held = [a for a in _in_message(messages[index]) if a is not None]
            if held:
                marked.append(index)
                found.extend(held)
        return cls(messages if owned else None, mine, marked, found)

    def extend_to(self, messages: Sequence[Any]) -> int | None:
        """If ``messages`` starts with this chain's messages, extend this chain's list
        to them and return its size before; else ``None``, unchanged."""
        return extend_if_continued(self.messages, messages, self.marked)


def extend_if_continued(mine: list[Any], messages: Sequence[Any], marked: list[int]) -> int | None:
    """If ``messages`` starts with the messages of ``mine`` (the very same objects at the
    indexes in ``marked``, where attachments were found; equal ones elsewhere), extend
    ``mine`` to ``messages`` in place and return its size before; else ``None``, with
    ``mine`` unchanged. Checked at C speed (see :class:`_Chain`)."""
    size = len(mine)
    # A chain rebuilt from scratch fails on its last message, before any deep ==.
    if type(messages) is not list or not size or len(messages) < size:
        return None
    if messages[size - 1] is not mine[-1]:
        return None
    mine.extend(messages[size:])
    if messages == mine and all(messages[index] is mine[index] for index in marked):
        return size
    del mine[size:]
    return None


class _History:
    """What one conversation's finished responses hold, remembered between turns.

    Kept beside the conversation, never on it, and only while it lives. A
    finished response does not change, but ``conversation.responses`` is a
    plain list its owner may edit: every turn checks, at C speed, that the
    list still starts with the responses remembered, the same objects, and
    forgets them all otherwise. Attachments are remembered as objects:
    whether each is still prepared (its fields may have changed since) is
    for ``state_of`` to say, every turn.

    The responses are remembered twice. Through weak proxies (equal only to
    their own referent), which keep nothing alive but make the check touch
    every response; and in a plain list, with which the check touches none
    (see ``_Chain``: the list is extended with the new responses and
    compared whole). A response refers to its conversation, so that list
    would keep the conversation alive: every list is let go whenever the
    garbage collector starts, which is the only way a conversation with
    responses is ever freed (it is a reference cycle), and is made again from
    the proxies the next turn.
    """

    __slots__ = ("chain", "found", "lock", "responses")

    def __init__(self) -> None:
        self.responses: list[Any] = []  # a weakref.proxy of each response remembered
        self.found = _Found()
        self.chain: _Chain | None = None
        self.lock = threading.Lock()

    @staticmethod
    def of(conversation: Any) -> _History | None:
        """The history of ``conversation``, made on first use (``None``: no weak references)."""
        key = id(conversation)
        entry = _histories.get(key)
        if entry is not None and entry[0]() is conversation:
            return entry[1]
        with _histories_lock:
            entry = _histories.get(key)
            if entry is not None and entry[0]() is conversation:
                return entry[1]
            try:
                ref = weakref.ref(conversation, lambda ref: _forget_history(key, ref))
            except TypeError:
                return None
            history = _History()
            _histories[key] = (ref, history)
        return history

    def check(self, responses: Sequence[Any]) -> int:
        """How many of ``responses`` are remembered; forgets them all if the list was edited."""
        count = len(self.responses)
        if not count:
            return 0
        held = _held.get(id(self))
        if (
            held is not None
            and len(held) == count
            and type(responses) is list
            and len(responses) >= count
        ):
            held.extend(responses[count:])  # only the new responses are touched
            same = responses == held
            del held[count:]
        else:
            try:
                same = responses[:count] == self.responses
            except ReferenceError:  # a remembered response is gone: the list was edited
                same = False
            if same:
                _hold(self, list(responses[:count]))
        if not same:
            self.responses = []
            self.found = _Found()
            _held.pop(id(self), None)
            return 0
        return count

    def settle(self, response: Any) -> bool:
        """Remember ``response``, just read after those remembered, if it is finished.

        A response still running (it may yet produce attachments) is read
        again next turn, and so is every one after it. So is one whose class
        defines its own ``==``, which the check of the list could not trust.
        """
        if not llm_internals.finished(response):
            return False
        if type(response).__eq__ is not _IDENTITY_EQ:
            return False
        self.responses.append(weakref.proxy(response))
        held = _held.get(id(self))
        if held is not None:
            held.append(response)
        return True


_IDENTITY_EQ: Any = object.__eq__
_histories: dict[int, tuple[weakref.ref[Any], _History]] = {}
_histories_lock = threading.Lock()
# Each history's responses, held (see _History): emptied whenever the collector starts.
_held: dict[int, list[Any]] = {}


def _hold(history: _History, responses: list[Any]) -> None:
    if _let_go not in gc.callbacks:
        gc.callbacks.append(_let_go)
    _held[id(history)] = responses


def _let_go(phase: str, info: dict[str, int]) -> None:
    """Garbage collector callback: before a collection, let go of every response held,
    so that what the collection would free without this package, it frees."""
    if phase == "start":
        _held.clear()


def _forget_history(key: int, ref: weakref.ref[Any]) -> None:
    """Weakref callback: the conversation is gone, and so is its history."""
    entry = _histories.get(key)
    if entry is not None and entry[0] is ref:
        _histories.pop(key, None)
        _held.pop(id(entry[1]), None)


def _add_response(found: _Found, response: Any, chain: _Chain | None) -> _Chain | None:
    chain = _add_prompt(found, getattr(response, "prompt", None), chain)
    found.extend(getattr(response, "attachments", None) or ())
    return chain


def _add_prompt(found: _Found, prompt: Any, chain: _Chain | None) -> _Chain | None:
    """Add what ``prompt`` holds; returns the chain of its messages as read (or ``chain``)."""
    found.extend(getattr(prompt, "attachments", None) or ())
    for result in getattr(prompt, "tool_results", None) or ():
        found.extend(getattr(result, "attachments", None) or ())
    # llm >= 0.36: an explicit messages= list, which Conversation.prompt() passes
    # holding the whole history. Without one, llm's Prompt.messages restates only
    # the attachments and tool results above, building new objects to do so.
    messages: Any = llm_internals.explicit_messages(prompt, _ABSENT)
    owned = messages is not _ABSENT
    if not owned:
        messages = getattr(prompt, "messages", None)
    if messages:
        chain = _Chain.read(messages, chain, owned=owned)
        found.extend(chain.found.items)
    return chain


_ABSENT = object()


def _in_message(message: Any) -> Iterator[Any]:
    for part in getattr(message, "parts", None) or ():
        yield getattr(part, "attachment", None)
        yield from getattr(part, "attachments", None) or ()
