"""What prepare found for an attachment, kept beside the attachment, never on it.

States live in a side table keyed by the attachment's identity and held
through a weak reference: nothing is stored on the attachment, so its
``id()``, ``==``, ``repr()``, ``__dict__``, what llm logs, and its copies and
pickles are exactly llm's. A ``copy.copy()``, ``copy.deepcopy()`` or
unpickled attachment is a new object and so a new, unprepared attachment
(preparing it again costs a fetch, never a wrong answer); only inside a
model's ``execute()`` does the integration read a copy as its original. The table never
keeps an attachment alive: an entry goes when its attachment is collected.

A state records the fields it was computed from: ``type``, ``path``, ``url``
and the ``content`` object. Once any of them changes, the state is dropped
and the attachment is unprepared again.

A URL's results also record the ``FetchKey`` they were fetched under, so
that a caller with a stricter address policy does not take them
(see ``covers``), and :func:`single_flight` shares a fetch only between
callers with equal keys.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from . import flights
from .keyed_ref import KeyedRef

if TYPE_CHECKING:
    from ..config import Config
    from ..credentials import Credential
    from .memory import Blob

__all__ = [
    "UNSET",
    "FetchKey",
    "Prepared",
    "covers",
    "fetch_key",
    "peek",
    "same_fields",
    "single_flight",
    "state_of",
]


class _Unset(enum.Enum):
    """A type not resolved yet. An enum member: copies and pickles stay ``UNSET``."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset.UNSET


class FetchKey(NamedTuple):
    """The settings of a ``Config`` that change what fetching a URL may return.

    Two callers with equal keys would get the same result (bytes, type or
    failure) from the same URL, so they may share one fetch and its failure.
    ``max_bytes`` decides whether content is refused as too large;
    ``block_private`` and ``allow`` which addresses may be reached;
    ``timeout``, ``deadline``, ``retries`` and ``fetch_queue_timeout``
    whether a slow, flaky or busy server fails; ``credentials`` and ``netrc``
    what a server that checks them answers. Not in it:
    ``max_total_bytes`` (a refusal of one call's budget is that call's own,
    never shared), ``concurrency`` (when a fetch runs, not
    what it returns) and the guard and bridge settings. A field added to
    ``Config`` that changes what a fetch returns belongs here.
    """

    max_bytes: int
    block_private: bool
    allow: frozenset[str]
    timeout: float
    deadline: float
    retries: int
    fetch_queue_timeout: float
    credentials: tuple[Credential, ...]
    netrc: bool


def fetch_key(config: Config) -> FetchKey:
    """The ``FetchKey`` of ``config``."""
    return FetchKey(
        max_bytes=config.max_bytes,
        block_private=config.block_private,
        allow=frozenset(config.allow),
        timeout=config.timeout,
        deadline=config.deadline,
        retries=config.retries,
        fetch_queue_timeout=config.fetch_queue_timeout,
        credentials=config.credentials,
        netrc=config.netrc,
    )


def covers(fetched: FetchKey | None, caller: FetchKey) -> bool:
    """Whether a URL result fetched under ``fetched`` may answer ``caller``.

    Only one fetched with the same credentials may: what a server answers one
    caller's token is not another's. Beyond that, only the address policy
    matters: a result fetched with ``block_private`` off (or with more hosts
    allowed) may come from an address the caller refuses, so the caller must
    fetch under its own policy. A success is a success whatever its timeouts;
    its size is checked against the caller's ``max_bytes`` by whoever reads
    the content.
    """
    if fetched is None:
        return False
    if (fetched.credentials, fetched.netrc) != (caller.credentials, caller.netrc):
        return False
    if not caller.block_private:
        return True
    return fetched.block_private and fetched.allow <= caller.allow


_Slot = tuple[asyncio.AbstractEventLoop, Hashable]


@dataclass
class Prepared:
    """Cached results of preparing one attachment.

    ``type`` is ``UNSET`` until resolved (it may resolve to ``None``: no type
    could be found); ``content``, ``id`` and ``base64`` are ``None`` until
    read or computed.
    """

    type: str | Literal[_Unset.UNSET] | None = UNSET
    content_blob: Blob | None = None
    """The bytes read from the path or URL (``content=`` bytes stay the attachment's),
    held under the memory budget: see :attr:`content`."""
    id: str | None = None
    """SHA-256 of the bytes of a path or ``content=``: llm's ``id()`` unless ``_id`` is set."""
    base64_blob: Blob | None = None
    """``base64_content()``, for content over 2 MiB, encoded once, off the event loop,
    for models that read it: see :attr:`base64`."""
    check_type: bool = False
    """Some ``model.prompt()`` deferred llm's type check to after prepare; every
    prompt with this attachment then checks it there (cheap once the type is known)."""
    type_key: FetchKey | None = None
    """For a URL: the key its ``type`` was fetched under."""
    content_key: FetchKey | None = None
    """For a URL: the key its ``content`` was fetched under."""
    _basis: tuple[object, ...] = field(default=(), repr=False)
    _flights: flights.Flights = field(default_factory=weakref.WeakValueDictionary, repr=False)

    @property
    def content(self) -> bytes | None:
        """The bytes read, or ``None``: not read, or dropped from memory since."""
        data = self.content_blob.read() if self.content_blob is not None else None
        return data if isinstance(data, bytes) else None

    @property
    def base64(self) -> str | None:
        """The base64 text of the content, or ``None``: not made, or dropped since."""
        data = self.base64_blob.read() if self.base64_blob is not None else None
        return data if isinstance(data, str) else None

    def computed_from(self, attachment: object) -> bool:
        """Whether ``attachment`` still has the fields this state was computed from."""
        return _same_basis(self._basis, _basis_of(attachment))

    def __getstate__(self) -> dict[str, Any]:
        # Flights are futures of a running loop: a copy or pickle has none.
        return {**self.__dict__, "_flights": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._flights = weakref.WeakValueDictionary()


def _basis_of(attachment: object) -> tuple[object, ...]:
    return tuple(getattr(attachment, name, None) for name in ("type", "path", "url", "content"))


def same_fields(one: object, other: object) -> bool:
    """Whether two attachments have the fields a state is computed from in common."""
    return _same_basis(_basis_of(one), _basis_of(other))


def _same_basis(kept: tuple[object, ...], now: tuple[object, ...]) -> bool:
    # type, path and url by value; content by identity: bytes are immutable, and
    # the state keeps the object alive, so the same object means the same bytes.
    return len(kept) == len(now) and kept[:3] == now[:3] and kept[3] is now[3]


_table: dict[int, tuple[KeyedRef, Prepared]] = {}
_table_lock = threading.Lock()


def _forget(ref: KeyedRef) -> None:
    """Weakref callback: the attachment is gone, and so is its state."""
    entry = _table.get(ref.key)
    if entry is not None and entry[0] is ref:
        _table.pop(ref.key, None)


def _current(attachment: object) -> Prepared | None:
    entry = _table.get(id(attachment))
    if entry is None or entry[0]() is not attachment:
        return None
    if not entry[1].computed_from(attachment):
        return None
    return entry[1]


def peek(attachment: object) -> Prepared | None:
    """The state of ``attachment`` if it has one, without creating one.

    ``None`` when it was never prepared, or when a field the state was
    computed from has changed since.
    """
    return _current(attachment)


def state_of(attachment: object) -> Prepared:
    """The state of ``attachment``, created empty on first use or after a change.

    ``attachment`` must support weak references (``llm.Attachment`` does).
    """
    state = _current(attachment)
    if state is not None:
        return state
    key = id(attachment)
    with _table_lock:
        state = _current(attachment)  # another thread may have made it meanwhile
        if state is None:
            state = Prepared(_basis=_basis_of(attachment))
            _table[key] = (KeyedRef(attachment, _forget), state)
    return state


async def single_flight(
    state: Prepared,
    key: Hashable,
    pending: Callable[[], Callable[[], Awaitable[None]] | None],
) -> None:
    """Run the work ``pending()`` names until none is left, one runner at a time per key.

    When two tasks on one loop prepare the same attachment with equal keys
    (see ``fetch_key``), the second waits for the first (see ``flights``) and
    then asks ``pending()`` again, which usually finds nothing left to do: the
    attachment is fetched once. Callers with different keys never wait for
    each other.
    """
    slot: _Slot = (asyncio.get_running_loop(), key)
    while (work := pending()) is not None:
        if not await flights.wait(state._flights, slot):
            await flights.fly(state._flights, slot, work)
