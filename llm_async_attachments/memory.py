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

A blob with a ``source`` (content that can be kept on disk) is not dropped
at once: :func:`admit` hands it back as leaving, still counted, and whoever
admitted writes it to the disk tier and then calls :func:`left`.

So the memory used for content is at most the budget plus what running
prepares and executes hold, and what is on its way to disk: leased blobs
may take the store over its budget until they are released, and they are
dropped first then. A blob made with
``keep=False`` (a ``no-store`` response) is held only while leased and is
dropped the moment its last lease ends, whatever the budget.

The store knows nothing of llm, HTTP or files.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Blob", "Lease", "StoreStatistics", "admit", "hold", "left", "statistics"]


class Blob:
    """One body (bytes) or base64 text held under the budget; ``data`` is ``None``
    once dropped. ``source`` says where it can be read back from without the
    network (a disk tier key), if anywhere."""

    __slots__ = ("__weakref__", "data", "keep", "leaving", "on_disk", "pins", "size", "source")

    def __init__(self, data: bytes | str, *, keep: bool, source: str | None = None) -> None:
        self.data: bytes | str | None = data
        self.size = len(data)
        self.keep = keep
        self.pins = 0
        self.source = source
        self.leaving = False
        self.on_disk = False

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

    def admit(self, blob: Blob, lease: Lease | None, budget: int) -> list[Blob]:
        with self.lock:
            if lease is not None:
                blob.pins += 1
            if blob.keep:
                self._blobs[id(blob)] = blob
            else:
                self._passing[id(blob)] = blob
            self.held += blob.size
            leaving = self._shrink(budget)
        if lease is not None:
            lease._blobs.append(blob)
        elif not blob.keep:
            self.release([], budget)  # nobody holds it: gone at once
        return leaving

    def left(self, blob: Blob) -> None:
        with self.lock:
            blob.leaving = False
            if blob.pins:  # needed again meanwhile: it stays, the most recently used
                self._blobs[id(blob)] = blob
            else:
                self._drop(blob)

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
            # What leaves memory here goes without a disk copy: a release may
            # come from any thread, with no loop to write from.
            for blob in self._shrink(budget):
                self._drop(blob)

    def _shrink(self, budget: int) -> list[Blob]:
        leaving: list[Blob] = []
        excess = self.held - budget
        if excess <= 0:
            return leaving
        for key, blob in list(self._blobs.items()):
            if excess <= 0:
                break
            if blob.pins:
                continue
            del self._blobs[key]
            excess -= blob.size
            if blob.source is None:
                self._drop(blob)
            else:
                blob.leaving = True  # counted until the disk has it
                leaving.append(blob)
        return leaving

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


def admit(
    data: bytes | str, *, keep: bool, budget: int, lease: Lease | None, source: str | None = None
) -> tuple[Blob, list[Blob]]:
    """Hold ``data`` under the budget (held by ``lease`` if given): its blob, and the
    blobs leaving memory to make room that have a ``source`` to be written to.

    Admitting drops other, least recently used blobs that no lease holds;
    those with a ``source`` stay counted, their data in hand, until the
    caller has written them and called :func:`left` for each.
    """
    blob = Blob(data, keep=keep, source=source)
    return blob, _store.admit(blob, lease, budget)


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


def left(blob: Blob) -> None:
    """A leaving blob is written (or could not be): drop its data from memory."""
    _store.left(blob)


def statistics() -> StoreStatistics:
    """What the process's store holds now."""
    return _store.statistics()
