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

The store knows nothing of llm, HTTP or files.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

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
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._blobs: OrderedDict[int, Blob] = OrderedDict()  # least recently used first
        self._passing: dict[int, Blob] = {}  # keep=False blobs, while leased
        self.held = 0

    def admit(self, blob: Blob, lease: Lease | None, budget: int) -> None:
        with self.lock:
            if lease is not None:
                blob.pins += 1
            if blob.keep:
                self._blobs[id(blob)] = blob
            else:
                self._passing[id(blob)] = blob
            self.held += blob.size
            self._shrink(budget)
        if lease is not None:
            lease._blobs.append(blob)
        elif not blob.keep:
            self.release([], budget)  # nobody holds it: gone at once

    def touch(self, blob: Blob) -> None:
        with self.lock:
            if id(blob) in self._blobs:
                self._blobs.move_to_end(id(blob))

    def release(self, blobs: list[Blob], budget: int) -> None:
        with self.lock:
            for blob in blobs:
                blob.pins -= 1
            for key, blob in list(self._passing.items()):
                if not blob.pins:
                    self._drop(blob)
                    del self._passing[key]
            self._shrink(budget)

    def _shrink(self, budget: int) -> None:
        excess = self.held - budget
        if excess <= 0:
            return
        for key, blob in list(self._blobs.items()):
            if excess <= 0:
                break
            if not blob.pins:
                del self._blobs[key]
                excess -= blob.size
                self._drop(blob)

    def _drop(self, blob: Blob) -> None:
        if blob.data is not None:
            blob.data = None
            self.held -= blob.size

    def statistics(self) -> StoreStatistics:
        with self.lock:
            every = [*self._blobs.values(), *self._passing.values()]
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
        if blob.keep and id(blob) in _store._blobs:
            _store._blobs.move_to_end(id(blob))
    lease._blobs.append(blob)
    return True


def statistics() -> StoreStatistics:
    """What the process's store holds now."""
    return _store.statistics()
