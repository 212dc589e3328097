"""prepare_attachments: find every attachment, resolve types, prefetch content, cache."""

from __future__ import annotations

import asyncio
import gc
import importlib
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import mime
from .budget import Budget, human
from .config import Config, get_config
from .declarations import url_support
from .errors import AttachmentError, AttachmentTooLarge, redact
from .files import read_path
from .offload import ON_LOOP_LIMIT, base64_text, sha256_hex
from .pacing import PER_TURN, your_turn
from .patch import install
from .state import UNSET, Prepared, covers, fetch_key, single_flight, state_of

if TYPE_CHECKING:
    from .budget import Meter
    from .http import Fetched

__all__ = ["PrepareSummary", "UrlPolicy", "prepare_attachments"]


@dataclass(frozen=True)
class PrepareSummary:
    """What one [`prepare_attachments`][] call did, for logs and metrics."""

    attachments: int
    """Attachments found in the prompt and conversation."""
    fetched: int
    """Attachments that needed I/O in this call (0 when everything was cached)."""
    bytes_fetched: int
    """Bytes downloaded or read in this call, after decompression."""
    requests: int
    """HTTP requests made in this call, redirects included."""
    seconds: float
    """Wall time of the call."""

    def __str__(self) -> str:
        def count(number: int, noun: str) -> str:
            return f"{number} {noun}" if number == 1 else f"{number} {noun}s"

        return (
            f"{count(self.attachments, 'attachment')}, {self.fetched} fetched "
            f"({human(self.bytes_fetched)}, {count(self.requests, 'request')}) "
            f"in {self.seconds:.3f} s"
        )


async def prepare_attachments(
    prompt: Any,
    conversation: Any = None,
    *,
    model: Any = None,
    config: Config | None = None,
) -> PrepareSummary:
    """Make every attachment of a prompt readable without I/O, fetching what is missing.

    Finds the attachments of ``prompt`` (its attachments, tool results and
    message parts) and of every earlier response in ``conversation``
    (including attachments that responses produced), then, concurrently:

    * resolves each missing type: an explicit ``type`` wins; paths and bytes
      are sniffed as llm does; URLs by ``HEAD``, or from the ``GET`` that
      fetches their content;
    * reads the content of paths and URLs, within ``config.max_bytes`` per
      attachment and ``config.max_total_bytes`` for the call; except that URL
      content is not fetched for types the model takes as URLs
      (``model.supports_attachment_urls``: ``True`` or MIME patterns such as
      ``{"image/*"}``, or the known behaviour of llm's OpenAI models;
      ``model`` defaults to ``prompt.model``).

    Results are cached for each attachment object, so afterwards its sync
    ``resolve_type()``, ``content_bytes()``, ``base64_content()`` and ``id()``
    do no I/O, and preparing again (the next turn) fetches nothing. A cached
    result serves a later call only if that call's ``config`` could have
    produced it: content over its ``max_bytes`` raises
    [`AttachmentTooLarge`][] without a fetch, and a URL fetched with
    ``block_private`` off is fetched again for a call that has it on. The
    first attachment to fail raises its [`AttachmentError`][] and cancels
    the rest (failures at the same moment are added to it as notes); the
    exception is this call's own object, never one another call raises too.
    """
    install()  # so that llm.Attachment's sync reads find what this prepares
    started = time.perf_counter()
    found = collect(prompt, conversation)
    if not found:
        return PrepareSummary(0, 0, 0, 0, time.perf_counter() - started)
    config = config or get_config()
    if model is None:
        model = getattr(prompt, "model", None)
    policy = UrlPolicy(url_support(model, config))
    run = _Run(config, policy)
    # A conversation's attachments are ready after its first turn: no task for those.
    unready = [attachment for attachment in found if not run.ready(attachment)]
    if unready:
        try:
            async with asyncio.TaskGroup() as group:
                for index, attachment in enumerate(unready):
                    if index and not index % PER_TURN:
                        await asyncio.sleep(0)  # thousands of tasks: a turn's worth at a time
                    group.create_task(run.prepare(attachment, need_content=True))
        except BaseExceptionGroup as failures:
            raise _first_failure(failures, found) from None
    return PrepareSummary(
        attachments=len(found),
        fetched=run.fetched,
        bytes_fetched=run.budget.used,
        requests=run.requests,
        seconds=time.perf_counter() - started,
    )


async def prepare_one(attachment: Any, *, need_content: bool, config: Config) -> Prepared:
    """Prepare a single attachment: its type, and its content when ``need_content``."""
    install()
    await _Run(config, UrlPolicy(False)).prepare(attachment, need_content=need_content)
    return state_of(attachment)


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
        """If ``messages`` starts with this chain's messages, the same objects, extend
        this chain's list to them and return its size before; else ``None``, unchanged."""
        mine = self.messages
        size = len(mine)
        # A chain rebuilt from scratch fails on its last message, before any deep ==.
        if type(messages) is not list or not size or len(messages) < size:
            return None
        if messages[size - 1] is not mine[-1]:
            return None
        mine.extend(messages[size:])
        if messages == mine and all(messages[index] is mine[index] for index in self.marked):
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
        if getattr(response, "_done", False) is not True:
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
    messages: Any = getattr(prompt, "_explicit_messages", _ABSENT)
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


class UrlPolicy:
    """A model's ``supports_attachment_urls``: which URL attachments it takes as URLs.

    ``True`` means every type, a string or collection of MIME patterns
    (``"image/*"``, ``"application/pdf"``) means those types, and anything
    false means none: their content is fetched and inlined.
    """

    def __init__(self, declared: bool | str | Collection[str] | None) -> None:
        self.everything = declared is True
        if isinstance(declared, bool) or not declared:
            self.patterns: tuple[str, ...] = ()
        elif isinstance(declared, str):
            self.patterns = (declared,)
        else:
            self.patterns = tuple(declared)

    def accepts(self, content_type: str | None) -> bool:
        """Whether a URL attachment of this type goes to the model without its content."""
        return self.everything or mime.matches(content_type, self.patterns)


class _Run:
    """One prepare call: its budget, counters and rules."""

    def __init__(self, config: Config, policy: UrlPolicy) -> None:
        self.config = config
        self.policy = policy
        self.key = fetch_key(config)
        self.budget = Budget(config.max_bytes, config.max_total_bytes)
        self.fetched = 0
        self.requests = 0

    def ready(self, attachment: Any) -> bool:
        """Whether ``attachment`` needs nothing from this call (a refusal is its task's)."""
        try:
            return self._pending(attachment, state_of(attachment), True) is None
        except AttachmentError:
            return False

    async def prepare(self, attachment: Any, *, need_content: bool) -> None:
        await your_turn()
        state = state_of(attachment)
        await single_flight(state, self.key, lambda: self._pending(attachment, state, need_content))

    def _pending(
        self, attachment: Any, state: Prepared, need_content: bool
    ) -> Callable[[], Awaitable[None]] | None:
        """The I/O still needed for this attachment, or ``None`` if it is ready."""
        if attachment.content:
            # Bytes in hand: no I/O, but hashing and encoding them is CPU work.
            if len(attachment.content) > ON_LOOP_LIMIT and state.base64 is None:
                return lambda: self._digest(attachment, state, attachment.content)
            return None
        if attachment.path:
            if state.content is None:
                return lambda: self._read_path(attachment, state)
            self._within_max_bytes(attachment, state.content)
            return None
        if not attachment.url:
            return None
        # Results fetched under a laxer address policy than this call's are not its own.
        found = state.type if covers(state.type_key, self.key) else UNSET
        if attachment.type or found is not UNSET:
            known_type: str | None = attachment.type or (None if found is UNSET else found)
            wants_content = need_content and not self.policy.accepts(known_type)
        else:
            wants_content = False
        if state.content is not None and covers(state.content_key, self.key):
            if wants_content:
                self._within_max_bytes(attachment, state.content)
            return None
        if attachment.type or found is not UNSET:
            if wants_content:
                return lambda: self._fetch(attachment, state, lambda content_type: True)
            return None
        if not need_content or self.policy.everything:
            return lambda: self._fetch_type(attachment, state)
        return lambda: self._fetch(
            attachment, state, lambda content_type: not self.policy.accepts(content_type)
        )

    async def _read_path(self, attachment: Any, state: Prepared) -> None:
        self.fetched += 1
        # One job on a worker thread reads, hashes and (if llm would) sniffs the file.
        sniff = not attachment.type and state.type is UNSET
        meter = self.budget.meter(attachment.path)
        read = await read_path(attachment.path, meter, sniff=sniff)
        if sniff and state.type is UNSET:
            state.type = read.type
        await self._digest(attachment, state, read.content, sha256=read.sha256)
        state.content = read.content

    async def _fetch_type(self, attachment: Any, state: Prepared) -> None:
        self.fetched += 1
        fetched = await fetch_type(attachment.url, self.config)
        self.requests += fetched.requests
        state.type, state.type_key = fetched.type, self.key

    async def _fetch(
        self, attachment: Any, state: Prepared, wanted: Callable[[str | None], bool]
    ) -> None:
        self.fetched += 1
        meter = self.budget.meter(redact(attachment.url))
        fetched = await fetch_content(attachment.url, meter, self.config, wanted)
        self.requests += fetched.requests
        if not attachment.type:
            state.type, state.type_key = fetched.type, self.key
        if fetched.content is not None:
            await self._digest(attachment, state, fetched.content)
            state.content, state.content_key = fetched.content, self.key

    async def _digest(
        self, attachment: Any, state: Prepared, content: bytes, sha256: str | None = None
    ) -> None:
        """The SHA-256 of the bytes (llm's id, and the hash llm >= 0.36 logs;
        not for URLs: both hash the URL), unless ``sha256`` already is it,
        and, for content too large to encode on the loop later, its base64 text."""
        if not attachment.url:
            state.id = sha256 if sha256 is not None else await sha256_hex(content)
        if len(content) > ON_LOOP_LIMIT:
            state.base64 = await base64_text(content)

    def _within_max_bytes(self, attachment: Any, content: bytes) -> None:
        """Refuse content read earlier, under a larger ``max_bytes`` than this call's."""
        limit = self.config.max_bytes
        if len(content) > limit:
            source = _source(attachment)
            raise AttachmentTooLarge(
                f"Attachment {source} is too large: it is {len(content)} bytes "
                f"({human(len(content))}), over the limit of {human(limit)} per attachment "
                "(it was read earlier, under a larger limit). If you trust this source, "
                "raise LLM_ASYNC_ATTACHMENTS_MAX_BYTES (Config.max_bytes); otherwise send "
                "a smaller file.",
                source=source,
                limit=limit,
                size=len(content),
            )


async def fetch_type(url: str, config: Config) -> Fetched:
    """The HTTP layer's ``fetch_type``, the layer imported first if need be (see ``_http``)."""
    http = _http_layer or await _http()
    fetched: Fetched = await http.fetch_type(url, config)
    return fetched


async def fetch_content(
    url: str, meter: Meter, config: Config, wanted: Callable[[str | None], bool]
) -> Fetched:
    """The HTTP layer's ``fetch_content``, the layer imported first if need be."""
    http = _http_layer or await _http()
    fetched: Fetched = await http.fetch_content(url, meter, config, wanted)
    return fetched


# The HTTP layer imports httpx, httpcore, h11 and anyio's asyncio backend: tens of
# milliseconds that every llm command would pay if the llm plugin imported it. It
# is imported when a URL is first fetched instead, on a worker thread that this
# awaits, so that the event loop goes on meanwhile. An importing thread holds the
# GIL until another thread has waited for it for the switch interval (5 ms by
# default), and the loop's thread would wait that long on every tick: the
# interval is 1 ms while the import runs (once per process).
_http_layer: ModuleType | None = None
_http_lock = threading.Lock()
_IMPORT_SWITCH_INTERVAL = 0.001


async def _http() -> ModuleType:
    return await asyncio.to_thread(_import_http)


def _import_http() -> ModuleType:
    global _http_layer
    with _http_lock:
        if _http_layer is None:
            interval = sys.getswitchinterval()
            sys.setswitchinterval(min(interval, _IMPORT_SWITCH_INTERVAL))
            try:
                _http_layer = importlib.import_module(".http", __package__)
            finally:
                sys.setswitchinterval(interval)
        return _http_layer


def _first_failure(group: BaseExceptionGroup, order: Iterable[Any]) -> BaseException:
    """One exception, not a group: the earliest attachment's, with the others noted on it.

    Every exception in the group is this call's own object (waiters of a
    shared fetch raise copies), so the notes reach no other caller.
    """
    failures: list[BaseException] = []
    pending: list[BaseExceptionGroup] = [group]
    while pending:
        for error in pending.pop().exceptions:
            if isinstance(error, BaseExceptionGroup):
                pending.append(error)
            else:
                failures.append(error)
    rank = {_source(attachment): index for index, attachment in enumerate(order)}
    failures.sort(key=lambda error: rank.get(getattr(error, "source", ""), len(rank)))
    first = failures[0]
    for other in failures[1:]:
        first.add_note(f"Also failed: {other}")
    return first


def _source(attachment: Any) -> str:
    return redact(attachment.url) if attachment.url else attachment.path or ""
