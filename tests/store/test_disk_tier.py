"""The disk tier: one SQLite database shared by processes, against real files and processes.

Records and claims through the tier's API; one budget kept by processes writing
at once; a writer killed with SIGKILL at a seeded moment; a full disk (a
file-size limit, which SQLite meets as a failed write); directories and files
others could have written; a damaged database; a storm of cancelled tasks.
What a child process does is in ``tests/support/disk_workers.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from llm_async_attachments.errors import DiskCacheWarning
from llm_async_attachments.store import disk_tier as disk
from llm_async_attachments.store.disk_tier import DATABASE, WAL_LIMIT, DiskTier
from llm_async_attachments.store.tier import Claim, Record
from tests.support import disk_workers as workers
from tests.support import eventually, warned
from tests.support.disk_workers import MiB, record_for, whole

ROOT = Path(__file__).resolve().parents[2]
OVERHEAD = disk._ROW_OVERHEAD  # what a row counts beyond its meta and body
OWN_FILES = {DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm"}
PAGE = 4096  # SQLite's default page size, which the tier keeps
SEEDS = [11, 2024, 31337, 4242, 777]
"""The seeds of the seeded tests: a failure names its seed, and reruns it alike."""


def entry_size(body: bytes, meta: bytes = b"") -> int:
    return len(body) + len(meta) + OVERHEAD


def body(key: str, version: int, size: int) -> bytes:
    """A body that says which key and version it is, in every block: a mix-up shows."""
    block = hashlib.sha256(f"{key}/{version}".encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def files(directory: Path) -> dict[str, int]:
    """The directory's files and their sizes."""
    return {path.name: path.stat().st_size for path in directory.iterdir()}


def rows(directory: Path) -> list[tuple[str, str, bytes, bytes, int]]:
    """The records' rows (key digest, version, meta, body, size), read behind the tier's back."""
    with contextlib.closing(sqlite3.connect(directory / DATABASE)) as connection:
        return connection.execute("SELECT key, version, meta, body, size FROM records").fetchall()


def integrity(directory: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(directory / DATABASE)) as connection:
        return [row[0] for row in connection.execute("PRAGMA integrity_check")]


def counted_right(tier: DiskTier) -> bool:
    """Whether the total the database keeps is the sum of its rows, each counted right.

    Rows and total are read in one transaction, so in one snapshot: a write still
    running on a worker thread for a task cancelled meanwhile commits before or after.
    """
    with contextlib.closing(sqlite3.connect(tier.directory / DATABASE)) as connection:
        connection.execute("BEGIN")
        found = connection.execute("SELECT meta, body, size FROM records").fetchall()
        (total,) = connection.execute("SELECT bytes FROM total").fetchone()
        connection.rollback()
    sizes = [size for meta, content, size in found if size == entry_size(content, meta)]
    return len(sizes) == len(found) and sum(sizes) == total


def caught() -> contextlib.AbstractContextManager[list[str]]:
    """The messages of the DiskCacheWarnings issued inside (filled at the end)."""
    return warned(DiskCacheWarning)


def kinds(messages: list[str]) -> list[str]:
    """What failed, per message: ``write an entry (SQLITE_FULL)``."""
    return [re.search(r"could not (.+?): ", message)[1] for message in messages]  # type: ignore[index]


async def size(tier: DiskTier) -> int:
    return await asyncio.to_thread(tier.size)


# Records.


async def test_round_trip(tmp_path):
    tier = DiskTier(tmp_path / "cache", max_bytes=MiB)
    key = "https://example.com/a.png?detail=high"
    version = await tier.put(key, b"content", b"image/png", 600)
    assert isinstance(version, str) and version
    assert await tier.get(key) == Record(b"content", b"image/png", version)
    assert await tier.get("https://example.com/other.png") is None
    assert await size(tier) == entry_size(b"content", b"image/png")
    assert set(files(tmp_path / "cache")) <= OWN_FILES


async def test_any_string_is_a_key(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    keys = ["", "\ud800 lone surrogate", "ünïcode/🙂", "x" * 10_000, "a\nb\x00c", "'; DROP"]
    versions = [
        await tier.put(key, str(number).encode(), b"", 600) for number, key in enumerate(keys)
    ]
    for number, key in enumerate(keys):
        assert await tier.get(key) == (str(number).encode(), b"", versions[number])


async def test_every_put_makes_a_new_version_and_replaces_the_record(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    versions = [await tier.put("k", b"body %d" % n, b"meta %d" % n, 600) for n in range(3)]
    assert len(set(versions)) == 3
    assert await tier.get("k") == (b"body 2", b"meta 2", versions[2])
    assert await size(tier) == entry_size(b"body 2", b"meta 2")
    assert len(await asyncio.to_thread(rows, tmp_path)) == 1


async def test_refresh_replaces_the_meta_of_the_version_it_names_only(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    stale = await tier.put("k", b"old body", b"old", 600)
    current = await tier.put("k", b"body", b"meta", 600)
    assert stale is not None and current is not None
    assert not await tier.refresh("k", stale, b"a 304 for the old body", 600)
    assert await tier.get("k") == (b"body", b"meta", current)  # untouched
    assert not await tier.refresh("missing", current, b"meta", 600)

    for meta in [b"a longer meta than before", b"short", b""]:
        assert await tier.refresh("k", current, meta, 600)
        assert await tier.get("k") == (b"body", meta, current)  # same version, same body
        assert await size(tier) == entry_size(b"body", meta)
        assert counted_right(tier)

    await tier.remove("k", current)
    assert not await tier.refresh("k", current, b"meta", 600)
    assert await size(tier) == 0


async def test_refresh_extends_the_expiry(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    written = time.time()
    refreshed = await tier.put("refreshed", b"body", b"meta", 0.2)
    assert await tier.put("not refreshed", b"body", b"meta", 0.2)
    assert refreshed is not None
    assert await tier.refresh("refreshed", refreshed, b"new meta", 600)
    await asyncio.sleep(max(0.0, written + 0.3 - time.time()))  # past the puts' expiry
    assert await tier.get("refreshed") == (b"body", b"new meta", refreshed)
    assert await tier.get("not refreshed") is None


async def test_remove_removes_only_the_version_it_names(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    first = await tier.put("k", b"body", b"", 600)
    await tier.put("other", b"body", b"", 600)
    await tier.remove("k", "not a version")
    await tier.remove("never there", "v")
    assert first is not None and await tier.get("k") is not None
    second = await tier.put("k", b"new body", b"", 600)
    assert second is not None
    await tier.remove("k", first)  # a stale removal leaves the new record
    assert await tier.get("k") == (b"new body", b"", second)
    await tier.remove("k", second)
    assert await tier.get("k") is None
    assert (await tier.get("other"))[0] == b"body"  # type: ignore[index]
    assert await size(tier) == entry_size(b"body")


async def test_an_expired_record_is_not_returned_and_leaves_on_the_next_put(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    assert await tier.put("expired", b"body", b"", 0)
    assert await tier.put("long ago", b"body", b"", -3600)
    assert await tier.get("expired") is None
    assert tier.get_blocking("long ago") is None
    claim = await tier.find_or_claim("expired", 60)
    assert isinstance(claim, Claim) and claim.token is not None
    assert await tier.put("fresh", b"body", b"", 600)
    assert await size(tier) == entry_size(b"body")  # the expired rows are gone
    assert len(await asyncio.to_thread(rows, tmp_path)) == 1


async def test_find_or_claim_finds_or_claims_once(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    version = await tier.put("present", b"body", b"meta", 600)
    assert await tier.find_or_claim("present", 60) == Record(b"body", b"meta", version)

    first = await tier.find_or_claim("k", 60)
    assert isinstance(first, Claim) and first.token is not None and not first.wait
    assert await tier.find_or_claim("k", 60) == Claim(None, True)  # another holds it: wait
    await tier.release("k", "not the token", mark=False)
    assert await tier.find_or_claim("k", 60) == Claim(None, True)
    await tier.release("k", first.token, mark=False)
    second = await tier.find_or_claim("k", 60)
    assert isinstance(second, Claim) and second.token not in (None, first.token)

    version = await tier.put("k", b"fetched", b"meta", 600)  # the put ends the claim
    assert await tier.find_or_claim("k", 60) == Record(b"fetched", b"meta", version)
    assert version is not None
    await tier.remove("k", version)
    third = await tier.find_or_claim("k", 60)
    assert isinstance(third, Claim) and third.token is not None


async def test_a_marked_key_is_fetched_without_a_claim_for_a_while(tmp_path, monkeypatch):
    monkeypatch.setattr(disk, "NOT_WORTH_WAITING", 0.2)
    tier = DiskTier(tmp_path, max_bytes=MiB)
    claim = await tier.find_or_claim("no-store", 60)
    assert isinstance(claim, Claim) and claim.token is not None
    await tier.release("no-store", claim.token, mark=True)
    assert await tier.find_or_claim("no-store", 60) == Claim(None, False)  # fetch, no claim
    claim = await poll_for_a_claim(tier, "no-store")  # the mark lapses by itself
    assert claim.token is not None

    await tier.release("no-store", claim.token, mark=True)
    assert await tier.find_or_claim("no-store", 60) == Claim(None, False)
    version = await tier.put("no-store", b"cacheable now", b"", 600)  # a put ends a mark
    assert await tier.find_or_claim("no-store", 60) == Record(b"cacheable now", b"", version)


async def poll_for_a_claim(tier: DiskTier, key: str, within: float = 10.0) -> Claim:
    """The first claim ``find_or_claim`` grants on ``key``, asked every 20 ms (bounded)."""
    give_up = time.monotonic() + within
    while time.monotonic() < give_up:
        found = await tier.find_or_claim(key, 60)
        if isinstance(found, Claim) and found.token is not None:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"no claim on {key!r} within {within} s")


def claim_rows(directory: Path) -> int:
    with contextlib.closing(sqlite3.connect(directory / DATABASE)) as connection:
        return int(connection.execute("SELECT count(*) FROM claims").fetchone()[0])


async def test_expired_claims_and_marks_leave_though_nothing_is_ever_kept(tmp_path, monkeypatch):
    # Responses that may not be kept: every key is claimed, then marked, never written.
    monkeypatch.setattr(disk, "NOT_WORTH_WAITING", 0.05)
    tier = DiskTier(tmp_path, max_bytes=MiB)
    for number in range(200):
        claim = await tier.find_or_claim(f"no-store-{number}", 0.05)
        assert isinstance(claim, Claim) and claim.token is not None
        if number % 2:
            await tier.release(f"no-store-{number}", claim.token, mark=True)
        # (the others' holders died: their claims expire)
    await asyncio.sleep(0.1)  # every claim and mark has expired
    assert isinstance(await tier.find_or_claim("another", 60), Claim)
    assert claim_rows(tmp_path) == 1  # the live one


async def test_a_claim_never_released_expires_by_itself(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    dead = await tier.find_or_claim("k", 0.2)  # its holder dies without releasing
    assert isinstance(dead, Claim) and dead.token is not None
    assert await tier.find_or_claim("k", 60) == Claim(None, True)
    assert (await poll_for_a_claim(tier, "k")).token != dead.token


async def test_the_least_recently_used_leave_first_and_a_get_refreshes(tmp_path, monkeypatch):
    monkeypatch.setattr(disk, "_TOUCH_EVERY", 0.0)  # every read writes its recency
    content = b"x" * 1000
    tier = DiskTier(tmp_path, max_bytes=3 * entry_size(content))
    for key in "abc":
        assert await tier.put(key, content, b"", 600)
    assert await tier.get("a") is not None  # now b is the least recently used
    assert await tier.put("d", content, b"", 600)
    assert [await tier.get(key) is not None for key in "abcd"] == [True, False, True, True]
    assert await size(tier) == 3 * entry_size(content) == tier.max_bytes
    # a, c and d were just read in that order: a leaves next.
    assert await tier.put("e", content, b"", 600)
    assert [await tier.get(key) is not None for key in "acde"] == [False, True, True, True]
    assert await asyncio.to_thread(counted_right, tier)


async def test_a_get_writes_recency_at_most_once_a_minute(tmp_path):
    content = b"x" * 1000
    tier = DiskTier(tmp_path, max_bytes=3 * entry_size(content))
    for key in "abc":
        assert await tier.put(key, content, b"", 600)
    assert await tier.get("a") is not None  # written less than a minute ago: not again
    assert await tier.put("d", content, b"", 600)
    assert [await tier.get(key) is not None for key in "abcd"] == [False, True, True, True]


async def test_an_entry_larger_than_the_limit_is_refused_and_the_old_one_removed(tmp_path):
    content = b"x" * 100
    tier = DiskTier(tmp_path, max_bytes=entry_size(content, b"m"))
    assert await tier.put("k", content, b"m", 600)
    claim = await tier.find_or_claim("other", 60)
    with caught() as messages:
        assert await tier.put("k", content + b"x", b"m", 600) is None
        assert await tier.put("other", content, b"mm", 600) is None
    assert messages == []  # a refusal is not a failure
    assert await tier.get("k") is None  # the old body must not answer for the new one
    assert await size(tier) == 0
    assert isinstance(claim, Claim) and claim.token is not None
    again = await tier.find_or_claim("other", 60)  # the refused put ended the claim too
    assert isinstance(again, Claim) and again.token not in (None, claim.token)


async def test_a_zero_limit_keeps_nothing(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=0)
    with caught() as messages:
        assert await tier.put("k", b"", b"", 600) is None
        assert await tier.get("k") is None
    assert messages == []
    assert await size(tier) == 0
    with pytest.raises(ValueError, match="max_bytes must be 0 or more"):
        DiskTier(tmp_path, max_bytes=-1)


async def test_failures_warn_once_per_kind_and_the_tier_recovers(tmp_path):
    directory = tmp_path / "cache"
    directory.write_bytes(b"not a directory")
    tier = DiskTier(directory, max_bytes=MiB)
    with caught() as messages:
        for _ in range(3):
            assert await tier.put("k", b"body", b"", 600) is None
            assert await tier.get("k") is None
            assert tier.get_blocking("k") is None
            await tier.remove("k", "v")
    assert kinds(messages) == [
        "write an entry (NotADirectoryError)",
        "read an entry (NotADirectoryError)",
        "remove an entry (NotADirectoryError)",
    ]
    assert all(f"disk cache in {directory}" in message for message in messages)
    assert all("Reported once per kind of failure" in message for message in messages)
    assert directory.read_bytes() == b"not a directory"  # left as it was

    directory.unlink()
    with caught() as messages:
        version = await tier.put("k", b"body", b"", 600)
        assert await tier.get("k") == (b"body", b"", version)
    assert messages == []


# Bugs found while writing these tests, fixed since.


async def test_pages_freed_by_evictions_go_back_to_the_file_system(tmp_path):
    limit = 4 * MiB
    tier = DiskTier(tmp_path, max_bytes=limit)
    for number in range(4):
        assert await tier.put(f"k{number}", body("k", number, MiB - 1000), b"", 600)
    assert await tier.put("large", body("large", 0, limit - 1000), b"", 600)  # evicts all four
    with contextlib.closing(sqlite3.connect(tmp_path / DATABASE)) as connection:
        (free,) = connection.execute("PRAGMA freelist_count").fetchone()
    assert free <= 2, f"{free} pages ({free * PAGE} bytes) still free in the file"


async def test_a_refresh_keeps_the_total_within_the_limit(tmp_path):
    content = b"x" * 1000
    tier = DiskTier(tmp_path, max_bytes=2 * entry_size(content))
    version = await tier.put("a", content, b"", 600)
    assert version is not None and await tier.put("b", content, b"", 600)
    assert await tier.refresh("a", version, b"m" * 500, 600)
    assert await size(tier) <= tier.max_bytes


def test_a_put_that_waited_for_the_lock_keeps_its_record(tmp_path):
    content = b"x" * 1000
    tier = DiskTier(tmp_path, max_bytes=2 * entry_size(content))
    asyncio.run(tier.put("b", content, b"", 600))
    asyncio.run(tier.put("c", content, b"", 600))
    assert tier.size() == 2 * entry_size(content)  # one connection idle now
    with contextlib.closing(sqlite3.connect(tmp_path / DATABASE, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # another process writing
        with ThreadPoolExecutor(1) as pool:
            put = pool.submit(asyncio.run, tier.put("a", content, b"", 600))
            assert eventually(lambda: not tier._idle)  # the put took it: `now` is read
            for key in "bc":  # what another process's gets write, as _record does
                other.execute(
                    "UPDATE records SET used = ? WHERE key = ?", (time.time(), workers.digest(key))
                )
            other.execute("COMMIT")
            version = put.result(timeout=30)
    assert version is not None
    assert tier.get_blocking("a") == (content, b"", version)


def test_a_connection_in_use_during_close_is_closed_when_given_back(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    assert tier.size() == 0
    ((connection, _generation),) = tier._idle
    with contextlib.closing(sqlite3.connect(tmp_path / DATABASE, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        with ThreadPoolExecutor(1) as pool:
            put = pool.submit(asyncio.run, tier.put("k", b"body", b"", 600))
            assert eventually(lambda: not tier._idle)  # in use, waiting for the lock
            tier.close()
            other.execute("COMMIT")
            assert put.result(timeout=30) is not None
    assert connection not in [idle for idle, _generation in tier._idle]
    with pytest.raises(sqlite3.ProgrammingError):  # closed
        connection.execute("SELECT 1")


def test_a_body_damaged_on_disk_is_not_served(tmp_path):
    content = bytes(range(256)) * 400
    tier = DiskTier(tmp_path, max_bytes=MiB)
    asyncio.run(tier.put("k", content, b"meta", 600))
    tier.close()  # the last connection: the log is checkpointed into the database
    data = bytearray((tmp_path / DATABASE).read_bytes())
    start = data.index(content[:1024]) + 5000  # inside the body, which repeats every 256
    data[start - start % PAGE + PAGE // 2] ^= 0x01  # mid-page: not an overflow page's link
    (tmp_path / DATABASE).write_bytes(bytes(data))
    reopened = DiskTier(tmp_path, max_bytes=MiB)
    with caught() as messages:
        assert reopened.get_blocking("k") is None  # read as absent: never the damaged bytes
        assert reopened.get_blocking("k") is None  # and removed, with no second warning
    assert kinds(messages) == ["read an entry (SQLITE_CORRUPT)"]
    assert "does not match its checksum" in messages[0]


# Off the loop.


async def test_a_large_body_is_written_and_read_off_the_loop(tmp_path):
    # The test's own work with 16 MiB (making and comparing it) runs on a worker
    # thread too, so that only the tier's work is measured by pyleak.
    tier = DiskTier(tmp_path, max_bytes=64 * MiB)
    held = [await asyncio.to_thread(os.urandom, 16 * MiB)]
    assert await tier.put("large", held[0], b"application/octet-stream", 600)
    found = await tier.get("large")
    assert found is not None
    held.append(found.body)
    del found
    assert await asyncio.to_thread(lambda: held[0] == held[1])
    await asyncio.to_thread(held.clear)


class _RecordingOs:
    """The ``os`` module, recording which thread calls each function."""

    def __init__(self, calls: list[tuple[str, int]]) -> None:
        self.calls = calls

    def __getattr__(self, name: str) -> Any:
        value = getattr(os, name)
        if not callable(value) or isinstance(value, type):
            return value

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, threading.get_ident()))
            return value(*args, **kwargs)

        return recorded


class _RecordingSqlite:
    """The ``sqlite3`` module, whose connections record which thread runs each statement."""

    def __init__(self, calls: list[tuple[str, int]]) -> None:
        self.calls = calls

    def __getattr__(self, name: str) -> Any:
        return getattr(sqlite3, name)

    def connect(self, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        calls = self.calls
        calls.append(("connect", threading.get_ident()))

        class Recording(sqlite3.Connection):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.set_trace_callback(lambda sql: calls.append((sql, threading.get_ident())))

        return sqlite3.connect(*args, factory=Recording, **kwargs)


async def test_nothing_runs_on_the_loop(tmp_path, monkeypatch):
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(disk, "os", _RecordingOs(calls))
    monkeypatch.setattr(disk, "sqlite3", _RecordingSqlite(calls))
    tier = DiskTier(tmp_path / "cache", max_bytes=3 * entry_size(b"x" * 1000))
    assert calls == []  # touches nothing yet
    version = await tier.put("k", b"x" * 1000, b"", 600)
    assert version is not None
    await tier.get("k")
    await tier.get("missing")
    await tier.refresh("k", version, b"meta", 600)
    claim = await tier.find_or_claim("claimed", 60)
    assert isinstance(claim, Claim) and claim.token is not None
    await tier.release("claimed", claim.token, mark=True)
    for key in "abcd":  # evictions (their pages go back as each commits)
        await tier.put(key, b"x" * 1000, b"", 600)
    await tier.put("too large", b"x" * MiB, b"", 600)
    await tier.remove("k", version)
    names = {name for name, _ in calls}
    assert {"connect", "mkdir", "chmod", "stat", "lstat", "open", "BEGIN IMMEDIATE"} <= names
    assert any(name.startswith("DELETE FROM records WHERE key = '") for name in names)
    loop_thread = threading.get_ident()
    assert [name for name, thread in calls if thread == loop_thread] == []


def test_get_blocking_reads_without_a_loop(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    version = asyncio.run(tier.put("k", b"body", b"m", 600))
    assert tier.get_blocking("k") == (b"body", b"m", version)
    assert tier.get_blocking("missing") is None
    with ThreadPoolExecutor(1) as pool:
        found = pool.submit(DiskTier(tmp_path, MiB).get_blocking, "k").result()
    assert found == (b"body", b"m", version)


def test_a_read_makes_no_second_copy_of_the_body(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=64 * MiB)
    asyncio.run(tier.put("large", b"\x5a" * (32 * MiB), b"", 600))
    tracemalloc.start()
    try:
        found = tier.get_blocking("large")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found is not None
    assert len(found.body) == 32 * MiB
    assert peak < 33 * MiB


# Concurrency inside one process.


async def test_concurrent_tasks_read_whole_bodies_while_they_are_replaced(tmp_path):
    keys = [f"key-{number}" for number in range(4)]
    size_ = 64 * 1024
    tier = DiskTier(tmp_path, max_bytes=len(keys) * entry_size(b"x" * size_))
    versions = range(8)
    bodies = {key: [body(key, version, size_) for version in versions] for key in keys}
    for key in keys:
        assert await tier.put(key, bodies[key][0], b"", 600)

    async def write(key: str) -> None:
        for content in bodies[key]:
            assert await tier.put(key, content, b"", 600)
            assert await size(tier) <= tier.max_bytes

    async def read(key: str) -> None:
        for _ in range(16):
            found = await tier.get(key)
            # Never absent (the entries fit), never part of one, never another key's.
            assert found is not None
            assert found.body in bodies[key]

    await asyncio.gather(*[write(key) for key in keys], *[read(key) for key in keys * 3])
    assert await asyncio.to_thread(counted_right, tier)


async def test_concurrent_tasks_stay_within_the_limit(tmp_path):
    size_ = 10_000
    limit = 5 * entry_size(b"x" * size_)
    tier = DiskTier(tmp_path, max_bytes=limit)

    async def work(number: int) -> None:
        for round_ in range(5):
            key = f"key-{(number + round_) % 20:02}"
            await tier.put(key, body(key, number, size_), b"", 600)
            assert await size(tier) <= limit
            found = await tier.get(f"key-{(number * 7 + round_) % 20:02}")
            assert found is None or len(found.body) == size_

    await asyncio.gather(*[work(number) for number in range(20)])
    assert await size(tier) <= limit
    assert await asyncio.to_thread(counted_right, tier)


async def test_writes_of_one_process_wait_for_each_other_not_for_sqlite(tmp_path, monkeypatch):
    # With no busy timeout, a write that found another thread of this process's in its
    # transaction would fail at once (SQLITE_BUSY): with a lock of the process's own, it
    # waits for it instead (rather than sleep in SQLite's busy handler, 1 ms and more).
    tier = DiskTier(tmp_path, max_bytes=64 * entry_size(b"x" * 4096))
    with contextlib.ExitStack() as opened:  # a connection per thread: two read, one writes
        for _ in range(3):
            opened.enter_context(tier._connection()).execute("PRAGMA busy_timeout = 0")
    monkeypatch.setattr(disk, "_BUSY_MS", 0)  # which a tidy-up after a write sets back
    keys = [f"key-{number}" for number in range(200)]
    with caught() as messages:
        claims = await asyncio.gather(*(tier.find_or_claim(key, 60) for key in keys))
        await asyncio.gather(
            *(tier.put(key, body(key, 0, 4096), b"", 600) for key in keys[::2]),
            *(
                tier.release(key, claim.token, mark=True)
                for key, claim in zip(keys[1::2], claims[1::2], strict=True)
                if isinstance(claim, Claim) and claim.token is not None
            ),
            *(tier.remove(key, "some version") for key in keys[:50]),
        )
    assert messages == []
    assert all(isinstance(claim, Claim) and claim.token for claim in claims)
    assert (
        await asyncio.gather(*(tier.find_or_claim(key, 60) for key in keys[1::2]))
        == [Claim(None, False)] * 100
    )  # marked: not worth waiting for
    assert await asyncio.to_thread(counted_right, tier)


def disk_threads() -> int:
    """How many threads the disk tiers of this process run their calls on."""
    return sum(t.name.startswith("llm-async-attachments-disk") for t in threading.enumerate())


def test_concurrent_threads_stay_within_the_limit_and_read_whole_bodies(tmp_path):
    size_ = 20_000
    keys = [f"key-{number}" for number in range(12)]
    limit = 6 * entry_size(b"x" * size_)
    tier = DiskTier(tmp_path, max_bytes=limit)
    writers = range(4)
    bodies = {key: [body(key, writer, size_) for writer in writers] for key in keys}
    for key in keys[:6]:
        asyncio.run(tier.put(key, bodies[key][0], b"", 600))
    writing = threading.Event()
    writing.set()
    found_bodies = 0

    async def write(writer: int) -> None:  # each writer thread runs its own loop
        for round_ in range(10):
            key = keys[(writer + round_) % len(keys)]
            assert await tier.put(key, bodies[key][writer], b"", 600)
            assert tier.size() <= limit

    def read(reader: int) -> None:
        nonlocal found_bodies
        round_ = 0
        while writing.is_set() or round_ < 20:
            key = keys[(reader + round_) % len(keys)]
            found = tier.get_blocking(key)
            if found is not None:
                assert found.body in bodies[key]
                found_bodies += 1
            assert tier.size() <= limit
            round_ += 1

    with ThreadPoolExecutor(8) as pool:
        readers = [pool.submit(read, reader) for reader in range(4)]
        for future in [pool.submit(asyncio.run, write(writer)) for writer in writers]:
            future.result()
        writing.clear()
        for future in readers:
            future.result()
    assert found_bodies > 0
    assert tier.size() <= limit
    assert counted_right(tier)
    # A connection per thread that used the tier at once: the pool's, and the tier's.
    assert len(tier._idle) <= 8 + disk_threads()


@pytest.mark.parametrize("seed", SEEDS[:2])
async def test_a_storm_of_cancellations_leaves_the_tier_whole(tmp_path, seed):
    rng = random.Random(seed)
    keys = [f"https://example.com/{number}.png" for number in range(16)]
    tier = DiskTier(tmp_path, max_bytes=8 * entry_size(b"x" * 100_000, b"x" * 100))
    loop = asyncio.get_running_loop()
    outcomes: list[tuple[str, object]] = []
    with caught() as messages:
        for round_ in range(4):
            tasks: list[tuple[str, asyncio.Future[Any]]] = []
            for number in range(60):
                key, roll = rng.choice(keys), rng.random()
                if roll < 0.4:
                    work: Any = tier.get(key)
                elif roll < 0.75:
                    content, meta = record_for(key, f"{round_}/{number}", rng.randrange(100_000))
                    work = tier.put(key, content, meta, 600)
                elif roll < 0.95:
                    work = tier.find_or_claim(key, 60)
                else:
                    work = tier.remove(key, "some version")
                task = asyncio.ensure_future(work)
                fate = rng.random()
                if fate < 0.1:
                    task.cancel()  # before it starts
                elif fate < 0.6:
                    loop.call_later(rng.uniform(0, 0.01), task.cancel)  # on its way, or done
                tasks.append((key, task))
            answers = await asyncio.gather(*(task for _, task in tasks), return_exceptions=True)
            outcomes += zip((key for key, _ in tasks), answers, strict=True)
        found = await asyncio.gather(*(tier.get(key) for key in keys))
        connections = len(tier._idle)  # one per thread that ever used the tier at once
    assert messages == []
    cancelled = sum(isinstance(answer, asyncio.CancelledError) for _, answer in outcomes)
    assert 0 < cancelled < len(outcomes), f"seed {seed}"
    answered = [*outcomes, *zip(keys, found, strict=True)]
    for key, answer in answered:
        assert not isinstance(answer, BaseException) or isinstance(
            answer, asyncio.CancelledError
        ), f"seed {seed}: {answer!r}"
        if isinstance(answer, Record):
            assert whole(key, answer.body, answer.meta), f"seed {seed}: {key}"
    assert await size(tier) <= tier.max_bytes
    assert await asyncio.to_thread(counted_right, tier)
    assert 0 < connections <= disk_threads(), f"seed {seed}"
    # And it still works.
    content, meta = record_for("after", "after", 1000)
    version = await tier.put("after", content, meta, 600)
    assert await tier.get("after") == (content, meta, version)


# Processes.


def spawn(mode: str, **arguments: Any) -> subprocess.Popen[str]:
    """A worker of ``tests/support/disk_workers.py`` (see there) in a process of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.disk_workers", mode, json.dumps(arguments)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def said(process: subprocess.Popen[str]) -> Any:
    """The next JSON line ``process`` wrote."""
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"the worker said nothing: {process.communicate(timeout=30)[1]}"
    return json.loads(line)


def ended(process: subprocess.Popen[str]) -> None:
    """Kill the process if it still runs (a test that failed midway), and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)
    for stream in (process.stdin, process.stdout, process.stderr):
        with contextlib.suppress(OSError):  # a pipe to a killed process
            stream.close()  # type: ignore[union-attr]


class Server:
    """A ``serve`` worker: one tier in a running process, asked one request at a time."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.process = spawn("serve", directory=str(directory), max_bytes=max_bytes)
        assert said(self.process) == {"ready": True}

    def __call__(self, op: str, **request: Any) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **request}) + "\n")
        self.process.stdin.flush()
        return said(self.process)

    def stop(self) -> list[str]:
        """Its DiskCacheWarnings, once it has ended."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        messages = said(self.process)["warnings"]
        assert self.process.wait(timeout=30) == 0
        return messages


def test_what_one_running_process_writes_another_finds(tmp_path):
    key = "https://example.com/shared.png"
    a = Server(tmp_path, MiB)
    try:
        b = Server(tmp_path, MiB)  # opened the database before a wrote anything
        try:
            assert b("get", key=key) == {"record": None}
            token, wait = a("find_or_claim", key=key, seconds=60)["claim"]
            assert token is not None and not wait
            assert b("find_or_claim", key=key, seconds=60) == {"claim": [None, True]}
            version = a("put", key=key, nonce="a/1", length=200_000)["version"]
            assert version is not None
            assert b("get", key=key) == {"record": {"version": version, "whole": True}}
            assert b("find_or_claim", key=key, seconds=60) == {
                "record": {"version": version, "whole": True}
            }

            token, _ = b("find_or_claim", key="no-store", seconds=60)["claim"]
            assert b("release", key="no-store", token=token, mark=True) == {}
            assert a("find_or_claim", key="no-store", seconds=60) == {"claim": [None, False]}

            here = DiskTier(tmp_path, MiB)  # and this process, a third
            found = here.get_blocking(key)
            assert found is not None and found.version == version
            asyncio.run(here.remove(key, version))
            assert a("get", key=key) == b("get", key=key) == {"record": None}
            assert a("size") == b("size") == {"size": 0}
            assert b.stop() == []
        finally:
            ended(b.process)
        assert a.stop() == []
    finally:
        ended(a.process)


def page_slack(limit: int, found_rows: int) -> int:
    """What a database file holds beyond ``limit`` bytes of ``found_rows`` rows.

    A row's last overflow page is part empty (up to a page per row); each 4 KiB page
    carries a 4-byte header besides its 4,092 bytes of content, and auto_vacuum's
    pointer map takes a page per 1,000 (0.1% each); the three tables, two indexes
    and the file header take a page each at least (16 pages, for the b-trees' inner
    pages too). Measured: 52 to 67 KiB beyond the rows with 19 to 28 rows.
    """
    return PAGE * (found_rows + 16) + 2 * limit // 1000


def state(connection: sqlite3.Connection) -> tuple[int, int, int]:
    """The rows, pages and free pages of the newest committed state (one snapshot)."""
    connection.execute("BEGIN")
    try:
        (count,) = connection.execute("SELECT count(*) FROM records").fetchone()
        (pages,) = connection.execute("PRAGMA page_count").fetchone()
        (free,) = connection.execute("PRAGMA freelist_count").fetchone()
    finally:
        connection.rollback()
    return count, pages, free


def at_rest(directory: Path) -> dict[str, int]:
    """The directory's files once its log is checkpointed and truncated, as SQLite does
    when the last connection closes (a process killed, or ended without closing, leaves
    the log and the file as its last checkpoint left them)."""
    with contextlib.closing(sqlite3.connect(directory / DATABASE)) as connection:
        assert connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    return files(directory)


def test_processes_writing_at_once_share_one_budget(tmp_path):
    limit = 2 * MiB
    fillers = [
        spawn("fill", directory=str(tmp_path), max_bytes=limit, seed=seed, count=40, name=f"w{n}")
        for n, seed in enumerate(SEEDS[:4])
    ]
    states: set[tuple[int, int, int]] = set()
    try:
        for process in fillers:
            assert said(process) == {"ready": True}
        for process in fillers:  # all at once
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        with contextlib.closing(sqlite3.connect(tmp_path / DATABASE)) as connection:
            while any(process.poll() is None for process in fillers):  # sampled, bounded
                states.add(state(connection))
                time.sleep(0.001)
        reports = [said(process) for process in fillers]
    finally:
        for process in fillers:
            ended(process)
    assert reports == [{"kept": 40, "broken": [], "warnings": []}] * len(fillers)

    tier = DiskTier(tmp_path, limit)
    assert integrity(tmp_path) == ["ok"]
    found = rows(tmp_path)
    assert 0 < tier.size() <= limit
    assert counted_right(tier)
    for digest, _, meta, content, _ in found:
        assert content == workers.expected_body(digest, meta)
    # Every committed state hands its free pages back: a checkpoint copies whichever
    # is newest into the file, and a file once grown stays so until a checkpoint
    # truncates it. (Before the fix, a put committed its row and evictions, then freed
    # their pages: CI found a file 98 KiB over the bound.)
    assert len(states) > 10
    for count, pages, free in states:
        assert free == 0 and pages * PAGE <= limit + page_slack(limit, count), (count, pages, free)
    on_disk = at_rest(tmp_path)
    assert set(on_disk) <= OWN_FILES
    slack = page_slack(limit, len(found))
    assert on_disk[DATABASE] <= limit + slack, f"{on_disk}: slack {slack}"


def test_the_log_is_back_within_its_limit_once_processes_stop_writing(tmp_path):
    limit = 2 * MiB
    fillers = [
        spawn("fill", directory=str(tmp_path), max_bytes=limit, seed=seed, count=80, name=f"w{n}")
        for n, seed in enumerate(SEEDS[:4])
    ]
    peak = 0
    try:
        for process in fillers:
            assert said(process) == {"ready": True}
        for process in fillers:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        while any(process.poll() is None for process in fillers):  # sampled, bounded
            with contextlib.suppress(FileNotFoundError):
                peak = max(peak, (tmp_path / f"{DATABASE}-wal").stat().st_size)
            time.sleep(0.001)
    finally:
        for process in fillers:
            ended(process)
    # While four processes write without a pause, SQLite's checkpoints starve and the
    # log may grow past its limit (measured: 4.5 to 35 MB); once they stop, the next
    # write checkpoints it and truncates it to the limit.
    content, meta = record_for("after", "after", 1000)
    assert asyncio.run(DiskTier(tmp_path, limit).put("after", content, meta, 600))
    log = (tmp_path / f"{DATABASE}-wal").stat().st_size
    assert log <= WAL_LIMIT, f"the log is {log} bytes at rest (peak {peak})"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_writer_killed_mid_write_leaves_a_sound_database(tmp_path, seed):
    rng = random.Random(seed)
    limit = 8 * MiB
    writer = spawn("crash", directory=str(tmp_path), max_bytes=limit, seed=seed)
    try:
        ready = said(writer)
        claimed = time.time()
        assert ready["ready"] and ready["claim"][0] is not None, f"seed {seed}: {ready}"
        time.sleep(rng.uniform(0.2, 1.0))  # the seeded moment: mid-write, most likely
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
        _, errors = writer.communicate(timeout=30)
    finally:
        ended(writer)
    assert "Traceback" not in errors and "Warning" not in errors, f"seed {seed}: {errors}"

    tier = DiskTier(tmp_path, limit)  # this process opens it afresh: SQLite recovers
    # The dead writer's claim stands until its time is up, then lapses by itself.
    if time.time() < claimed + workers.CLAIM_SECONDS - 0.2:  # (a second to spare, as a rule)
        assert asyncio.run(tier.find_or_claim(workers.HELD, 60)) == Claim(None, True)
    with caught() as messages:
        assert integrity(tmp_path) == ["ok"], f"seed {seed}"
        found = rows(tmp_path)
        digests = {workers.digest(f"key-{number}"): f"key-{number}" for number in range(12)}
        for digest, _, meta, content, _ in found:
            assert digest in digests and content == workers.expected_body(digest, meta), (
                f"seed {seed}: {digests.get(digest)}"
            )
        for key in digests.values():
            record = tier.get_blocking(key)
            assert record is None or whole(key, record.body, record.meta), f"seed {seed}: {key}"
        assert 0 <= tier.size() <= limit, f"seed {seed}"
        assert counted_right(tier), f"seed {seed}"
        claim = asyncio.run(poll_for_a_claim(tier, workers.HELD))
        assert claim.token != ready["claim"][0]
        content, meta = record_for("after", "after", 1000)
        version = asyncio.run(tier.put("after", content, meta, 600))
        assert tier.get_blocking("after") == (content, meta, version)
    assert messages == [], f"seed {seed}"
    # What the killed write had begun never reaches the file: its rows and pages.
    on_disk = at_rest(tmp_path)
    assert set(on_disk) <= OWN_FILES, f"seed {seed}: {on_disk}"
    slack = page_slack(limit, len(found) + 1)  # and "after"
    assert on_disk[DATABASE] <= limit + slack, f"seed {seed}: {on_disk}: slack {slack}"


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_a_full_disk_keeps_nothing_new_and_warns_once_per_kind(tmp_path, seed):
    limit = random.Random(seed).randrange(MiB, 6 * MiB)
    full = spawn("full", directory=str(tmp_path), limit=limit, seed=seed)
    try:
        report = said(full)
        assert full.wait(timeout=60) == 0
    finally:
        ended(full)
    where = f"seed {seed}, file-size limit {limit}"
    assert report["escaped"] == [], where  # no exception reached the caller
    outcomes = report["outcomes"]
    assert outcomes[0] and not all(outcomes), f"{where}: {outcomes}"
    assert report["unread"] == [], where  # what was kept before is read whole
    failed = kinds(report["warnings"])
    assert failed and len(failed) == len(set(failed)), f"{where}: {failed}"
    assert all(re.fullmatch(r"write an entry \(SQLITE_\w+\)", kind) for kind in failed), failed

    tier = DiskTier(tmp_path, 64 * MiB)  # room again: all is there, and sound
    with caught() as messages:
        assert integrity(tmp_path) == ["ok"], where
        for key in report["kept"]:
            record = tier.get_blocking(key)
            assert record is not None and whole(key, record.body, record.meta), where
        assert counted_right(tier)
    assert messages == []


# What others could have written.


def planted(directory: Path, key: str) -> bytes:
    """A valid database in ``directory`` holding a record for ``key``; its bytes."""
    tier = DiskTier(directory, MiB)
    assert asyncio.run(tier.put(key, b"planted body", b"planted", 600))
    tier.close()  # the last connection: the log is folded into the database
    assert set(files(directory)) == {DATABASE}
    return (directory / DATABASE).read_bytes()


def refused(directory: Path, reason: str, contents: bytes | None = None) -> None:
    """A tier on ``directory`` keeps and returns nothing, and says once why."""
    tier = DiskTier(directory, MiB)
    with caught() as messages:
        assert tier.get_blocking("k") is None
        assert asyncio.run(tier.get("k")) is None
        assert asyncio.run(tier.find_or_claim("k", 60)) is None  # could not ask
        assert asyncio.run(tier.put("k", b"body", b"", 600)) is None
        assert asyncio.run(tier.put("other", b"body", b"", 600)) is None
        assert tier.size() == 0
    assert len(messages) == 1, messages
    assert "could not trust its directory" in messages[0]
    assert reason in messages[0], messages[0]
    if contents is not None:  # left exactly as it was
        assert (directory / DATABASE).read_bytes() == contents


def test_a_directory_others_can_write_is_not_trusted(tmp_path):
    directory = tmp_path / "cache"
    contents = planted(directory, "k")
    directory.chmod(0o777)
    refused(directory, "can be written by its group or others (mode 777)", contents)


@pytest.mark.parametrize("end", ["", "-wal", "-shm"])
def test_a_database_file_its_group_can_write_is_not_trusted(tmp_path, end):
    directory = tmp_path / "cache"
    contents = planted(directory, "k")
    path = directory / f"{DATABASE}{end}"
    path.touch()
    path.chmod(0o620)
    refused(directory, f"{path} can be written by its group or others (mode 620)", contents)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
@pytest.mark.parametrize("what", ["directory", "database"])
def test_a_directory_or_database_another_user_owns_is_not_trusted(tmp_path, what):
    directory = tmp_path / "cache"
    contents = planted(directory, "k")
    path = directory if what == "directory" else directory / DATABASE
    os.chown(path, 65534, 65534)
    refused(directory, f"{path} is owned by user 65534, not this process's (0)", contents)


def test_a_directory_or_database_that_is_a_symlink_is_not_trusted(tmp_path):
    real = tmp_path / "real"
    contents = planted(real, "k")
    (tmp_path / "link").symlink_to(real)
    refused(tmp_path / "link", f"{tmp_path / 'link'} is not a directory")
    (tmp_path / "other").mkdir(mode=0o700)
    (tmp_path / "other" / DATABASE).symlink_to(real / DATABASE)
    refused(tmp_path / "other", "is not a regular file")
    assert (real / DATABASE).read_bytes() == contents


def test_what_the_tier_creates_only_this_user_can_read(tmp_path):
    directory = tmp_path / "cache"
    tier = DiskTier(directory, MiB)
    previous = os.umask(0)  # process-wide: restored at once
    try:
        version = asyncio.run(tier.put("k", b"private", b"", 600))
    finally:
        os.umask(previous)
    assert version is not None
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in directory.iterdir()}
    assert modes == dict.fromkeys(OWN_FILES, 0o600)


# A damaged database.


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_a_database_overwritten_with_random_bytes_reads_as_empty(tmp_path, seed):
    rng = random.Random(seed)
    tier = DiskTier(tmp_path, MiB)
    for number in range(20):
        asyncio.run(tier.put(f"k{number}", body("k", number, 5000), b"", 600))
    tier.close()
    database = tmp_path / DATABASE
    database.write_bytes(rng.randbytes(database.stat().st_size))
    tier = DiskTier(tmp_path, MiB)
    with caught() as messages:
        assert tier.get_blocking("k1") is None
        assert asyncio.run(tier.get("k2")) is None
        assert asyncio.run(tier.put("k3", b"body", b"", 600)) is None
        assert asyncio.run(tier.find_or_claim("k3", 60)) is None
        assert tier.get_blocking("k3") is None
    assert kinds(messages) == [
        "read an entry (SQLITE_NOTADB)",
        "write an entry (SQLITE_NOTADB)",
        "claim a fetch (SQLITE_NOTADB)",
    ], f"seed {seed}"
    assert all("The database is damaged" in message for message in messages)
