"""prepare_attachments: find every attachment, resolve types, prefetch content, cache."""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import mime
from .budget import Budget, human
from .config import Config, get_config
from .declarations import url_support
from .errors import AttachmentError, AttachmentTooLarge, redact
from .files import read_path
from .history import collect
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
    policy = UrlPolicy(url_support(model))
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
