"""The disk tier in processes of their own, for ``tests/store/test_disk_tier.py``.

``python -m tests.support.disk_workers MODE 'JSON arguments'``, from the
repository's root. Each mode opens a :class:`DiskTier` on a directory that
other processes (the test's, other workers) use too, and speaks JSON lines on
stdout (and, for ``serve``, stdin).

Every record a worker writes can be checked by whoever reads it, in any
process, through the tier or straight from the database's rows: its meta
names a nonce and a length, and its body is derived from its key's digest and
that nonce (:func:`expected_body`). A body cut short, or served under the meta
of another write, shows.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import resource
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llm_async_attachments.errors import DiskCacheWarning
from llm_async_attachments.store.disk_tier import DiskTier
from llm_async_attachments.store.tier import Claim

MiB = 1024 * 1024
HELD = "held by the writer"
"""The key the ``crash`` writer claims first and never releases."""
CLAIM_SECONDS = 2.0
"""How long that claim lasts (longer than the test lets the writer live: it holds the
claim when killed): a dead holder stalls the others no longer."""
KEYS = 12
"""The ``crash`` writer's keys: ``key-0`` to ``key-11``, so writes replace records."""


def digest(key: str) -> str:
    """The tier's name for ``key`` in the database (its rows' ``key`` column)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def body_of(key_digest: str, nonce: str, length: int) -> bytes:
    """``length`` bytes that say which key and which write they are, in every block."""
    block = hashlib.sha256(f"{key_digest}/{nonce}".encode()).digest()
    return (block * (length // len(block) + 1))[:length]


def meta_of(nonce: str, length: int, refreshed: int = 0) -> bytes:
    return json.dumps({"nonce": nonce, "length": length, "refreshed": refreshed}).encode()


def record_for(key: str, nonce: str, length: int) -> tuple[bytes, bytes]:
    """The body and meta of a write of ``key``."""
    return body_of(digest(key), nonce, length), meta_of(nonce, length)


def expected_body(key_digest: str, meta: bytes) -> bytes:
    """The body a record must hold, given its key's digest and its meta."""
    fields = json.loads(meta)
    return body_of(key_digest, fields["nonce"], fields["length"])


def whole(key: str, body: bytes, meta: bytes) -> bool:
    """Whether ``body`` is all of the body written with ``meta`` under ``key``."""
    return body == expected_body(digest(key), meta)


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


@contextmanager
def disk_warnings() -> Iterator[list[str]]:
    """The messages of the DiskCacheWarnings issued inside (every one, none filtered)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        messages: list[str] = []
        yield messages
    messages += [str(w.message) for w in seen if issubclass(w.category, DiskCacheWarning)]


async def serve(directory: str, max_bytes: int) -> None:
    """Answer one JSON request per stdin line until stdin closes."""
    tier = DiskTier(Path(directory), max_bytes)
    with disk_warnings() as messages:
        await tier.get("opened")  # opens the database before saying ready
        say({"ready": True})
        while line := await asyncio.to_thread(sys.stdin.readline):
            request = json.loads(line)
            op, key = request["op"], request.get("key", "")
            if op == "put":
                body, meta = record_for(key, request["nonce"], request["length"])
                say({"version": await tier.put(key, body, meta, request.get("keep_for", 600))})
            elif op in ("get", "find_or_claim"):
                if op == "get":
                    found: object = await tier.get(key)
                else:
                    found = await tier.find_or_claim(key, request["seconds"])
                if isinstance(found, Claim):
                    say({"claim": list(found)})
                elif found is None:
                    say({"record": None})
                else:
                    body, meta, version = found
                    say({"record": {"version": version, "whole": whole(key, body, meta)}})
            elif op == "release":
                await tier.release(key, request["token"], mark=request["mark"])
                say({})
            elif op == "size":
                say({"size": await asyncio.to_thread(tier.size)})
    say({"warnings": messages})


async def fill(directory: str, max_bytes: int, seed: int, count: int, name: str) -> None:
    """Write ``count`` records of random sizes under keys of this worker's own, reading
    some back, once told to go (so that the workers start together)."""
    rng = random.Random(seed)
    tier = DiskTier(Path(directory), max_bytes)
    with disk_warnings() as messages:
        await tier.get("opened")
        say({"ready": True})
        await asyncio.to_thread(sys.stdin.readline)
        kept, broken = 0, []
        for number in range(count):
            key, nonce = f"{name}-{number}", f"{seed}/{number}"
            length = rng.choice([rng.randrange(20_000), rng.randrange(50_000, 300_000)])
            body, meta = record_for(key, nonce, length)
            kept += await tier.put(key, body, meta, 600) is not None
            other = f"{name}-{rng.randrange(number + 1)}"
            found = await tier.get(other)
            if found is not None and not whole(other, found.body, found.meta):
                broken.append(other)
    say({"kept": kept, "broken": broken, "warnings": messages})


async def crash(directory: str, max_bytes: int, seed: int) -> None:
    """Claim :data:`HELD`, then write, refresh and remove records until killed."""
    rng = random.Random(seed)
    tier = DiskTier(Path(directory), max_bytes)
    claim = await tier.find_or_claim(HELD, CLAIM_SECONDS)
    say({"ready": True, "claim": list(claim) if isinstance(claim, Claim) else None})
    current: dict[str, tuple[str, str, int, int]] = {}  # key: version, nonce, length, refreshes
    for number in range(10**9):
        key = f"key-{rng.randrange(KEYS)}"
        roll = rng.random()
        if key in current and roll < 0.15:
            version, nonce, length, refreshed = current[key]
            meta = meta_of(nonce, length, refreshed + 1) + b" " * rng.randrange(100)
            if await tier.refresh(key, version, meta, 600):
                current[key] = (version, nonce, length, refreshed + 1)
        elif key in current and roll < 0.25:
            await tier.remove(key, current.pop(key)[0])
        else:
            nonce = f"{seed}/{number}"
            large = rng.random() < 0.3
            length = rng.randint(MiB, 4 * MiB) if large else rng.randrange(200_000)
            body, meta = record_for(key, nonce, length)
            version = await tier.put(key, body, meta, 600)
            if version is None:
                current.pop(key, None)
            else:
                current[key] = (version, nonce, length, 0)


async def full(directory: str, limit: int, seed: int) -> None:
    """Write records past a file-size limit of ``limit`` bytes (a full disk, for SQLite:
    a write past it fails with EFBIG), then read back every one that was kept."""
    rng = random.Random(seed)
    tier = DiskTier(Path(directory), 1024 * MiB)  # the budget never evicts here
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the first write past it kills
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    kept: dict[str, str] = {}
    outcomes: list[bool] = []
    escaped: list[str] = []
    unread: list[str] = []
    with disk_warnings() as messages:
        written = 0
        while written < 3 * limit:
            key, length = f"key-{len(outcomes)}", rng.randrange(1_000, 400_000)
            body, meta = record_for(key, f"{seed}/{len(outcomes)}", length)
            try:
                version = await tier.put(key, body, meta, 600)
            except BaseException as exc:  # must not happen: reported, not raised
                escaped.append(repr(exc))
                version = None
            outcomes.append(version is not None)
            if version is not None:
                kept[key] = version
            written += length
        for key, version in kept.items():
            try:
                found = await tier.get(key)
            except BaseException as exc:
                escaped.append(repr(exc))
                found = None
            if found is None or found.version != version or not whole(key, *found[:2]):
                unread.append(key)
    say(
        {
            "outcomes": outcomes,
            "kept": sorted(kept),
            "escaped": escaped,
            "unread": unread,
            "warnings": messages,
        }
    )


MODES = {"serve": serve, "fill": fill, "crash": crash, "full": full}

if __name__ == "__main__":
    asyncio.run(MODES[sys.argv[1]](**json.loads(sys.argv[2])))
