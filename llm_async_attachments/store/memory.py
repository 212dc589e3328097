"""Content held in memory under one process-wide budget; least recently used leaves first.

Every body that prepare reads or fetches, and every base64 copy it makes, is
a :class:`Blob` admitted to the process's one :class:`Store`. The store
counts their bytes against ``Config.cache_bytes`` and, when over, drops the
least recently used blobs that no :class:`Lease` holds: a lease is taken by
a prepare call and, through the hook, kept until the model's ``execute()``
has finished, so content a running model needs never leaves. A dropped
blob's ``data`` becomes ``None``; whoever holds the blob reads it back from
where it came (the disk tier, the file, or the network) the next time it is
needed.

So the memory used for content is at most the budget plus what running
prepares and executes hold: leased blobs may take the store over its budget
until they are released, and they are dropped first then. A blob made with
``keep=False`` (a ``no-store`` response) is held only while leased and is
dropped the moment its last lease ends, whatever the budget.

The store holds blobs weakly: content leaves memory with the last attachment or
shared cache entry that holds it, whatever the budget. The store knows nothing
of llm, HTTP or files.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from .keyed_ref import KeyedRef

__all__ = ["Blob", "Lease", "StoreStatistics", "admit", "hold", "statistics"]


class Blob:
    """One body (bytes) or base64 text held under the budget; ``data`` is ``None``
    once dropped."""

    __slots__ = ("__weakref__", "data", "keep", "pins", "size")

    def __init__(self, data: bytes | str, *, keep: bool) -> None:
        self.data: bytes | str | None = data
        self.size = len(data)
        self.keep = keep
        self.pins = 0

    def read(self) -> bytes | str | None:
        """The data, marked as just used; ``None`` if it was dropped."""
        data = self.data
        if data is not None and self.keep:
            _store.touch(self)
        return data


class Lease:
    """Blobs one prepare (and the execute after it) needs: never dropped while held.

    Release it exactly once, on every path (``with`` does).
    """

    __slots__ = ("_blobs", "budget")

    def __init__(self, budget: int) -> None:
        self._blobs: list[Blob] = []
        self.budget = budget

    def release(self) -> None:
        blobs, self._blobs = self._blobs, []
        _store.release(blobs, self.budget)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


@dataclass(frozen=True)
class StoreStatistics:
    """What the store holds now."""

    held: int
    """Bytes of blobs in memory, leased or not."""
    blobs: int
    """Blobs in memory."""
    leased: int
    """Bytes of blobs some lease holds (never dropped while held)."""


class _Store:
    """The blobs in memory, least recently used first, each held weakly: a blob whose
    holders (attachments, shared cache entries) are all gone leaves with them."""

    def __init__(self) -> None:
        # Re-entrant: a blob's weakref callback may run in a collection that starts
        # while this thread holds the lock.
        self.lock = threading.RLock()
        self._blobs: OrderedDict[int, KeyedRef] = OrderedDict()
        self._passing: dict[int, KeyedRef] = {}  # keep=False blobs, while leased
        self.held = 0
        self._on_gone = self._gone

    def admit(self, blob: Blob, lease: Lease | None, budget: int) -> None:
        ref = KeyedRef(blob, self._on_gone, blob.size)
        with self.lock:
            if lease is not None:
                blob.pins += 1
            if blob.keep:
                self._blobs[ref.key] = ref
            else:
                self._passing[ref.key] = ref
            self.held += blob.size
            self._shrink(budget)
        if lease is not None:
            lease._blobs.append(blob)
        elif not blob.keep:
            self.release([], budget)  # nobody holds it: gone at once

    def _gone(self, ref: KeyedRef) -> None:
        """A blob was collected, its data with it (it was still counted if listed)."""
        with self.lock:
            for listed in (self._blobs, self._passing):
                if listed.get(ref.key) is ref:
                    del listed[ref.key]
                    self.held -= ref.size
                    return

    def touch(self, blob: Blob) -> None:
        with self.lock:
            if id(blob) in self._blobs:
                self._blobs.move_to_end(id(blob))

    def release(self, blobs: list[Blob], budget: int) -> None:
        with self.lock:
            for blob in blobs:
                blob.pins -= 1
            for key, ref in list(self._passing.items()):
                passing = ref()
                if passing is not None and not passing.pins:
                    del self._passing[key]
                    self._drop(passing)
            self._shrink(budget)

    def _shrink(self, budget: int) -> None:
        excess = self.held - budget
        if excess <= 0:
            return
        for key, ref in list(self._blobs.items()):
            if excess <= 0:
                break
            blob = ref()
            if blob is not None and not blob.pins:
                del self._blobs[key]
                excess -= blob.size
                self._drop(blob)

    def _drop(self, blob: Blob) -> None:
        if blob.data is not None:
            blob.data = None
            self.held -= blob.size

    def statistics(self) -> StoreStatistics:
        with self.lock:
            refs = [*self._blobs.values(), *self._passing.values()]
            every = [blob for blob in (ref() for ref in refs) if blob is not None]
            leased = sum(blob.size for blob in every if blob.pins and blob.data is not None)
            return StoreStatistics(self.held, len(every), leased)


_store = _Store()


def admit(data: bytes | str, *, keep: bool, budget: int, lease: Lease | None) -> Blob:
    """Hold ``data`` under the budget (held by ``lease`` if given) and return its blob.

    Admitting drops other, least recently used blobs that no lease holds.
    """
    blob = Blob(data, keep=keep)
    _store.admit(blob, lease, budget)
    return blob


def hold(blob: Blob, lease: Lease) -> bool:
    """Hold ``blob`` in ``lease`` if its data is still in memory; whether it was."""
    with _store.lock:
        if blob.data is None:
            return False
        blob.pins += 1
        _store.touch(blob)
    lease._blobs.append(blob)
    return True


def statistics() -> StoreStatistics:
    """What the process's store holds now."""
    return _store.statistics()
