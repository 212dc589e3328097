"""What a tier below memory is: one record per response, and claims on misses.

The shared cache (``shared_responses``) keeps URL responses in memory first;
below it are tiers that outlive the process: the disk tier (``disk_tier``,
SQLite, one machine) and the fleet tier (``fleet_tier``, Redis, many). Each
keeps **records**: a response's body and its headers and validators (the
``meta``), written and read as one unit and named by a ``version`` that each
write makes anew. A ``304`` refreshes a record's meta only if the record is
still the version the request was conditioned on, so a body is never served
under headers that came with another.

A tier also takes **claims**: the first process to miss a key claims it (in
the same call that looked for its record) and fetches; the others wait for
its record instead of asking the origin too. Writing the record ends the
claim; a claim expires by itself, so a holder that died stalls the others no
longer than the claim's seconds. A holder that kept nothing releases its
claim, and may mark the key for a while as not worth waiting for (its
response was ``no-store``, had no caching headers, or failed): misses then
fetch at once.

A tier never raises to its caller for what it cannot do (a full disk, a
server down): it answers as if it had nothing (a claim it could not ask
for, ``None``), and warns once per kind of failure. It knows nothing of llm
or HTTP.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from typing import NamedTuple, Protocol

__all__ = ["NOT_WORTH_WAITING", "Claim", "Record", "Tier", "Warner", "key_digest"]

NOT_WORTH_WAITING = 60.0
"""Seconds a key whose last response was not kept is fetched without a claim."""


class Record(NamedTuple):
    """One response as a tier keeps it."""

    body: bytes
    meta: bytes
    """Its headers and validators, as the caching rules serialise them."""
    version: str
    """Names this record: every write makes a new one."""


class Claim(NamedTuple):
    """What asking to fetch a key found."""

    token: str | None
    """Held: the caller fetches, then releases with this. ``None``: not held."""
    wait: bool
    """Another caller holds it: wait for its record rather than fetch."""


class Tier(Protocol):
    """A store of records shared by processes (see the module docstring)."""

    name: str
    """What warnings and ``status`` call it: ``disk``, ``fleet``."""

    async def get(self, key: str) -> Record | None:
        """The record kept under ``key``, or ``None``."""

    async def find_or_claim(self, key: str, seconds: float) -> Record | Claim | None:
        """The record kept under ``key``; else a claim to fetch it, for at most ``seconds``;
        ``None`` if the tier could not answer (it warned)."""

    async def put(self, key: str, body: bytes, meta: bytes, keep_for: float) -> str | None:
        """Keep a new record under ``key`` for at most ``keep_for`` seconds, replacing
        any other, and end any claim or mark on ``key``; its version, or ``None`` if
        nothing was kept."""

    async def refresh(self, key: str, version: str, meta: bytes, keep_for: float) -> bool:
        """Replace the meta of the record under ``key`` if it is still ``version``;
        whether it was."""

    async def remove(self, key: str, version: str) -> None:
        """Remove the record under ``key`` if it is still ``version``."""

    async def release(self, key: str, token: str, *, mark: bool) -> None:
        """End a claim that wrote no record; ``mark``: the key is not worth waiting for."""


def key_digest(key: str) -> str:
    """What a tier names ``key`` by: its SHA-256 in hex (keys are long URLs; any string,
    lone surrogates included)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class Warner:
    """Warns once per kind of failure of one tier (``kind``: what failed, e.g. a write)."""

    def __init__(self, category: type[Warning], where: str) -> None:
        self._category = category
        self._where = where
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def warn(self, kind: str, problem: object, advice: str) -> None:
        """``The <where> could not <kind>: <problem>. <advice>``, the first time for ``kind``."""
        with self._lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        warnings.warn(
            f"The {self._where} could not {kind}: {problem}. {advice} "
            "Preparing goes on without it. (Reported once per kind of failure.)",
            self._category,
            stacklevel=3,
        )
