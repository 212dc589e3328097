"""The tiers below memory that a config has, used as one: the disk, then the fleet.

A lookup asks the closest tier first (the disk: this machine), then the
fleet's (Redis: every machine), and copies what the fleet had down to the
disk. A write goes to every tier. A miss everywhere is **claimed** in the
widest tier, so that one process in the fleet fetches while the others poll
the tiers for its record (:meth:`Tiers.wait_or_claim`): a claim lasts at most
:data:`CLAIM_SECONDS`, so a holder that died costs the others no more. While
the widest tier cannot answer (Redis down), the next one takes the claims:
the processes of a machine still fetch a URL once between them.

Each tier keeps its own version of a record; :data:`Versions` names, per
tier, the record a response in memory is, so that a ``304`` refreshes only
that record (see ``tier``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Generic, NamedTuple, TypeVar

from .tier import Claim, Record, Tier

__all__ = [
    "CLAIM_SECONDS",
    "POLL_FIRST",
    "POLL_MOST",
    "Found",
    "Held",
    "Read",
    "Tiers",
    "Versions",
]


T = TypeVar("T")
Read = Callable[[bytes], tuple[T, float] | None]
"""What the caller reads in a record's meta, and the seconds the record is worth keeping;
``None`` when the meta is not valid."""


class Versions(dict[str, str]):
    """Tier name -> the version of the record there."""


CLAIM_SECONDS = 15.0
"""The longest a claim lasts (shorter if the fetch's deadline is): a holder that died
holds the others up no longer, and a fetch slower than that is made by them too."""
POLL_FIRST = 0.01
"""Seconds a miss claimed elsewhere waits before it first looks for the record."""
POLL_MOST = 0.1
"""The longest wait between two looks (each doubles the last, up to this)."""


class Found(NamedTuple, Generic[T]):
    """A record found in a tier, what the caller read in its meta, and the versions it
    now has in each tier."""

    record: Record
    read: T
    versions: Versions


class Held(NamedTuple):
    """A claim :meth:`Tiers.wait_or_claim` took: the name of its tier, and its token."""

    tier: str
    token: str


class Tiers:
    """``tiers``, closest first. Lookups take ``read(meta)`` (see :data:`Read`), so that
    a record's meta is read once, and one that is not valid is removed."""

    def __init__(self, tiers: tuple[Tier, ...]) -> None:
        self.tiers = tiers
        self._named = {tier.name: tier for tier in tiers}

    async def _find(self, tiers: Sequence[Tier], key: str, read: Read[T]) -> Found[T] | None:
        """The closest record for ``key`` in ``tiers``."""
        for index, tier in enumerate(tiers):
            record = await tier.get(key)
            if record is not None:
                found = await self._found(index, record, key, read)
                if found is not None:
                    return found
        return None

    async def _found(self, index: int, record: Record, key: str, read: Read[T]) -> Found[T] | None:
        """``record``, from the tier at ``index``, copied to the closer ones; ``None`` if
        it is not ours to read (it is removed)."""
        tier = self.tiers[index]
        reading = read(record.meta)
        if reading is None:
            await tier.remove(key, record.version)
            return None
        value, seconds = reading
        versions = Versions({tier.name: record.version})
        for closer in self.tiers[:index]:
            version = await closer.put(key, record.body, record.meta, seconds)
            if version is not None:
                versions[closer.name] = version
        return Found(record, value, versions)

    async def keep(self, key: str, body: bytes, meta: bytes, keep_for: float) -> Versions:
        """Write a new record to every tier; the versions of those that kept it."""
        versions = Versions()
        for tier in self.tiers:
            version = await tier.put(key, body, meta, keep_for)
            if version is not None:
                versions[tier.name] = version
        return versions

    async def refresh(self, key: str, versions: Versions, meta: bytes, keep_for: float) -> None:
        """New meta for the records named by ``versions`` (a tier whose record has
        changed since keeps the new one)."""
        for tier in self.tiers:
            version = versions.get(tier.name)
            if version is not None:
                await tier.refresh(key, version, meta, keep_for)

    async def wait_or_claim(
        self, key: str, seconds: float, read: Read[T]
    ) -> tuple[Found[T] | None, Held | None]:
        """The closest record for ``key``, else a claim to fetch it (``None``: not claimed,
        fetch anyway). While another process holds the claim, the tiers are looked at
        again until its record comes or ``seconds`` pass."""
        *closer, _ = self.tiers
        loop = asyncio.get_running_loop()
        until, pause = loop.time() + seconds, POLL_FIRST
        while True:
            found = await self._find(closer, key, read)
            if found is not None:
                return found, None
            index, answer = await self._find_or_claim(key, seconds)
            if isinstance(answer, Record):
                found = await self._found(index, answer, key, read)
                if found is not None:
                    return found, None
            elif not answer.wait or loop.time() > until:
                token = answer.token
                return None, None if token is None else Held(self.tiers[index].name, token)
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_MOST)

    async def _find_or_claim(self, key: str, seconds: float) -> tuple[int, Record | Claim]:
        """The answer of the widest tier that can give one, and that tier's index."""
        for index in reversed(range(len(self.tiers))):
            answer = await _find_or_claim(self.tiers[index], key, seconds)
            if answer is not None:
                return index, answer
        return 0, Claim(None, False)

    async def release(self, key: str, held: Held, *, mark: bool) -> None:
        """End a claim :meth:`wait_or_claim` took, when its tier kept no record
        (``mark``: the key is not worth waiting for)."""
        await self._named[held.tier].release(key, held.token, mark=mark)


async def _find_or_claim(tier: Tier, key: str, seconds: float) -> Record | Claim | None:
    """``tier.find_or_claim()``, and if the caller is cancelled meanwhile, a claim it took
    is released when it comes (rather than held, unused, until it expires)."""
    asking = asyncio.ensure_future(tier.find_or_claim(key, seconds))
    try:
        return await asyncio.shield(asking)
    except asyncio.CancelledError:
        asking.add_done_callback(functools.partial(_give_up, tier, key))
        raise


def _give_up(tier: Tier, key: str, asking: asyncio.Future[Record | Claim | None]) -> None:
    if asking.cancelled() or asking.exception() is not None:
        return
    answer = asking.result()
    if isinstance(answer, Claim) and answer.token is not None:
        releasing = asyncio.ensure_future(tier.release(key, answer.token, mark=False))
        _releases.add(releasing)
        releasing.add_done_callback(_releases.discard)


_releases: set[asyncio.Future[None]] = set()  # running: a task must be referenced to run
