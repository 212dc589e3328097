"""The preparation engine: types resolved, content read and fetched, under every cap.

It takes attachment-like objects (``type``, ``path``, ``url``, ``content``)
with where each was found, and a :class:`Plan` of what to prepare; it knows
no models and never imports llm. What it prepares is kept beside each
attachment (``store.state``), held by the caller's lease.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..caps import Budget, Progress, human
from ..config import Config
from ..errors import AttachmentError, AttachmentTooLarge, redact
from ..store import shared_responses
from ..store.memory import Blob, Lease, admit, hold
from ..store.state import UNSET, Prepared, covers, fetch_key, single_flight, state_of
from ..url_text import host_of
from . import data_urls
from .cpu_jobs import ON_LOOP_LIMIT, base64_text
from .data_urls import is_data_url
from .files import read_path
from .loop_turns import PER_TURN, your_turn
from .needs import Place
from .plan import Plan, UrlPolicy

__all__ = ["One", "PrepareSummary", "prepare", "prepare_one"]


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


async def prepare(
    placed: Sequence[tuple[Any, Place]],
    plan: Plan,
    lease: Lease,
    *,
    started: float,
    progress: Progress | None = None,
) -> PrepareSummary:
    """Prepare each attachment of ``placed`` (an attachment-like object with ``type``,
    ``path``, ``url`` and ``content``, and where it was found) as ``plan`` says.

    What was prepared is held by ``lease`` until the caller releases it (the
    hook: once the model's ``execute()`` has read it). ``started``: the
    ``time.perf_counter()`` the summary's time counts from. ``progress`` is told
    of each URL body this call downloads, as it arrives. The first
    attachment to fail raises its ``AttachmentError`` and cancels the rest.
    """
    lease.budget = plan.config.cache_bytes
    run = _Run(plan, lease, progress)
    waiting: list[tuple[Any, Place]] = []
    for index, (attachment, place) in enumerate(placed):
        if index and not index % PER_TURN:
            await asyncio.sleep(0)  # thousands of attachments: a turn's worth at a time
        # A conversation's attachments are ready after its first turn: no work.
        if not run.ready(attachment, place):
            waiting.append((attachment, place))
    # At most as many workers as fetches may run at once (for these hosts), not a task
    # per attachment: thousands of waiting tasks would outlive young collections, and
    # every full collection the process then makes would scan them all (100 ms for 5,000).
    ordered, hosts = _hosts_in_turn(waiting)
    config = plan.config
    workers = min(len(ordered), config.concurrency, config.host_concurrency * hosts)
    work = iter(ordered)
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(run.work_through(work))
    except BaseExceptionGroup as failures:
        raise _first_failure(failures, [attachment for attachment, _ in placed]) from None
    return PrepareSummary(
        attachments=len(placed),
        fetched=run.fetched,
        bytes_fetched=run.budget.used,
        requests=run.requests,
        seconds=time.perf_counter() - started,
    )


def _hosts_in_turn(
    waiting: list[tuple[Any, Place]],
) -> tuple[list[tuple[Any, Place]], int]:
    """``waiting`` reordered to take each host's next attachment in turn (hosts as the
    pool's per-host slots count them; files are one "host"), so that workers held up
    by one host's limit do not keep the others waiting; and how many hosts there are."""
    by_host: dict[str | None, list[tuple[Any, Place]]] = {}
    for item in waiting:
        url: str | None = item[0].url
        by_host.setdefault(host_of(url) if url else None, []).append(item)
    if len(by_host) <= 1:
        return waiting, len(by_host)
    turns = itertools.zip_longest(*by_host.values())
    return [item for turn in turns for item in turn if item is not None], len(by_host)


class One(NamedTuple):
    """One attachment prepared by :func:`prepare_one`."""

    state: Prepared
    content: bytes | None
    """The content, when asked for (held while the caller has it: it may leave
    the state's memory at any time after)."""


async def prepare_one(attachment: Any, *, need_content: bool, config: Config) -> One:
    """Prepare a single attachment: its type, and its content when ``need_content``."""
    plan = Plan(config, UrlPolicy(False), everything=need_content)
    with Lease(config.cache_bytes) as lease:
        await _Run(plan, lease).prepare(attachment, "prompt")
        state = state_of(attachment)
        return One(state, state.content if need_content else None)


class _Run:
    """One prepare call: its budget, counters and plan; what it prepares, its lease holds."""

    def __init__(self, plan: Plan, lease: Lease, progress: Progress | None = None) -> None:
        self.config = config = plan.config
        self.plan = plan
        self.lease = lease
        self.progress = progress
        self.key = fetch_key(config)
        self.budget = Budget(config.max_bytes, config.max_total_bytes)
        self.fetched = 0
        self.requests = 0

    def ready(self, attachment: Any, place: Place) -> bool:
        """Whether ``attachment`` needs nothing from this call (a refusal is its task's)."""
        try:
            return self._pending(attachment, state_of(attachment), place) is None
        except AttachmentError:
            return False

    async def work_through(self, work: Iterator[tuple[Any, Place]]) -> None:
        """Prepare attachments from ``work``, shared with this call's other workers."""
        for attachment, place in work:
            await self.prepare(attachment, place)

    async def prepare(self, attachment: Any, place: Place) -> None:
        await your_turn()
        state = state_of(attachment)
        await single_flight(state, self.key, lambda: self._pending(attachment, state, place))

    def _pending(
        self, attachment: Any, state: Prepared, place: Place
    ) -> Callable[[], Awaitable[None]] | None:
        """The work still needed for this attachment, or ``None`` if it is ready."""
        if attachment.content:
            # Bytes in hand: no I/O, but hashing and encoding them is CPU work.
            if (
                len(attachment.content) > ON_LOOP_LIMIT
                and state.base64 is None
                and self.plan.wants_base64(attachment.type or _known(state), place)
            ):
                return lambda: self._encode(attachment, state, attachment.content)
            return None
        if attachment.path:
            content_type = attachment.type or _known(state)
            if place == "prompt" and self._refused(attachment, state):
                return None  # llm's own check refuses it on its type; its body is not read
            if state.id is None:
                return lambda: self._read_path(attachment, state, place)
            if self.plan.wants_content(content_type, place, url=False):
                if not self._holds(state):
                    return lambda: self._read_path(attachment, state, place)
                return self._ready_content(attachment, state, content_type, place)
            return None
        if not attachment.url:
            return None
        if is_data_url(attachment.url):
            return self._pending_data(attachment, state, place)
        typed = self.plan.urls.type_of(attachment.url)
        if typed is not None:  # sent as it is, its type known from the URL: nothing to do
            if not attachment.type and state.type is UNSET:
                state.type, state.type_key = typed, self.key
            return None
        # Results fetched under a laxer address policy than this call's are not its own.
        found = state.type if covers(state.type_key, self.key) else UNSET
        if not attachment.type and found is UNSET:
            if not self.plan.may_want_content():
                return lambda: self._fetch_type(attachment, state)
            return lambda: self._fetch(attachment, state, place)
        known_type: str | None = attachment.type or (None if found is UNSET else found)
        if not self.plan.wants_content(known_type, place, url=True):
            return None
        if covers(state.content_key, self.key) and self._holds(state):
            return self._ready_content(attachment, state, known_type, place)
        return lambda: self._fetch(attachment, state, place)

    def _pending_data(
        self, attachment: Any, state: Prepared, place: Place
    ) -> Callable[[], Awaitable[None]] | None:
        """The work for a ``data:`` URL: decoding it, whatever the address policy (it
        reaches no address)."""
        if not attachment.type and state.type is UNSET:
            return lambda: self._decode(attachment, state, place)
        known_type = attachment.type or _known(state)
        if not self.plan.wants_content(known_type, place, url=True):
            return None
        if self._holds(state):
            return self._ready_content(attachment, state, known_type, place)
        return lambda: self._decode(attachment, state, place)

    async def _decode(self, attachment: Any, state: Prepared, place: Place) -> None:
        decoded = await data_urls.decode(attachment.url, self.budget.meter(_source(attachment)))
        if not attachment.type:
            state.type = decoded.type
        if self.plan.wants_content(attachment.type or decoded.type, place, url=True):
            state.content_blob = self._admit(decoded.content)

    def _refused(self, attachment: Any, state: Prepared) -> bool:
        """Whether the model refuses ``attachment``'s type, as far as it is known."""
        if attachment.type:
            return not self.plan.accepts(attachment.type)
        return state.type is not UNSET and not self.plan.accepts(state.type)

    def _holds(self, state: Prepared) -> bool:
        """Whether the state's content is in memory, now held by this call's lease."""
        return state.content_blob is not None and hold(state.content_blob, self.lease)

    def _ready_content(
        self, attachment: Any, state: Prepared, content_type: str | None, place: Place
    ) -> Callable[[], Awaitable[None]] | None:
        content = state.content
        if content is None:
            return None
        self._within_max_bytes(attachment, content)
        if (
            len(content) > ON_LOOP_LIMIT
            and not (state.base64_blob is not None and hold(state.base64_blob, self.lease))
            and self.plan.wants_base64(content_type, place)
        ):
            return lambda: self._encode(attachment, state, content)
        return None

    async def _read_path(self, attachment: Any, state: Prepared, place: Place) -> None:
        self.fetched += 1
        # One job on a worker thread reads, hashes and (if llm would) sniffs the file.
        sniff = not attachment.type and state.type is UNSET
        meter = self.budget.meter(attachment.path)
        # A prompt's file of a type the model refuses: sniffed from its ends, not read.
        wanted = self.plan.accepts if place == "prompt" and self.plan.refuses_some else None
        read = await read_path(attachment.path, meter, sniff=sniff, wanted=wanted)
        if sniff and state.type is UNSET:
            state.type = read.type
        if read.content is None:
            return
        if state.id is None:
            state.id = read.sha256
        state.content_blob = self._admit(read.content)

    async def _fetch_type(self, attachment: Any, state: Prepared) -> None:
        self.fetched += 1
        content_type, requests = await shared_responses.fetch_type(attachment.url, self.config)
        self.requests += requests
        state.type, state.type_key = content_type, self.key

    async def _fetch(self, attachment: Any, state: Prepared, place: Place) -> None:
        self.fetched += 1
        meter = self.budget.meter(redact(attachment.url))
        wanted = functools.partial(self._wanted, attachment.type, place)
        got = await shared_responses.content(
            attachment.url, meter, self.config, self.key, wanted, self.lease, self.progress
        )
        self.requests += got.requests
        if not attachment.type:
            state.type, state.type_key = got.type, self.key
        if got.blob is not None:
            content = got.blob.data
            assert isinstance(content, bytes)  # held by the lease
            self._within_max_bytes(attachment, content)
            state.content_blob, state.content_key = got.blob, self.key

    def _wanted(self, declared: str | None, place: Place, content_type: str | None) -> bool:
        """Whether a URL's body should be read, once its response says its type."""
        return self.plan.wants_content(declared or content_type, place, url=True)

    async def _encode(self, attachment: Any, state: Prepared, content: bytes) -> None:
        """base64 text of content too large to encode on the loop, for models that read it."""
        state.base64_blob = self._admit(await base64_text(content))

    def _admit(self, data: bytes | str) -> Blob:
        return admit(data, keep=True, budget=self.config.cache_bytes, lease=self.lease)

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


def _known(state: Prepared) -> str | None:
    return None if state.type is UNSET else state.type


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
