"""The disk tier: a bounded directory of cached bodies, against a real temporary directory."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from llm_async_attachments.store import disk_tier as disk
from llm_async_attachments.store.disk_tier import DiskCacheWarning, DiskTier

MiB = 1024 * 1024
OVERHEAD = 40 + 32  # header and checksum


def entry_path(directory: Path, key: str) -> Path:
    name = hashlib.sha256(key.encode()).hexdigest()
    return directory / name[:2] / name


def entry_size(key: str, content: bytes, meta: bytes = b"") -> int:
    return OVERHEAD + len(key.encode()) + len(meta) + len(content)


def files_in(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


def body(key: str, version: int, size: int) -> bytes:
    """A body that says which key and version it is, in every block: a mix-up shows."""
    block = hashlib.sha256(f"{key}/{version}".encode()).digest()
    return (block * (size // len(block) + 1))[:size]


async def test_round_trip(tmp_path):
    tier = DiskTier(tmp_path / "cache", max_bytes=MiB)
    key = "https://example.com/a.png?detail=high"
    assert await tier.put(key, b"content", meta=b"image/png")
    assert await tier.get(key) == (b"content", b"image/png")
    assert await tier.get("https://example.com/other.png") is None
    assert tier.size() == entry_size(key, b"content", b"image/png")
    assert files_in(tmp_path / "cache") == [entry_path(tmp_path / "cache", key)]
    assert entry_path(tmp_path / "cache", key).stat().st_size == tier.size()


async def test_any_string_is_a_key(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    keys = ["", "\ud800 lone surrogate", "ünïcode/🙂", "x" * 10_000, "a\nb\x00c"]
    for number, key in enumerate(keys):
        assert await tier.put(key, str(number).encode())
    for number, key in enumerate(keys):
        assert await tier.get(key) == (str(number).encode(), b"")


async def test_a_put_replaces_the_entry(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    assert await tier.put("k", b"old body", meta=b"old")
    assert await tier.put("k", b"new", meta=b"meta")
    assert await tier.get("k") == (b"new", b"meta")
    assert tier.size() == entry_size("k", b"new", b"meta")
    assert len(files_in(tmp_path)) == 1


async def test_remove(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    await tier.put("k", b"body")
    await tier.put("other", b"body")
    await tier.remove("k")
    await tier.remove("never there")
    assert await tier.get("k") is None
    assert await tier.get("other") == (b"body", b"")
    assert tier.size() == entry_size("other", b"body")
    assert files_in(tmp_path) == [entry_path(tmp_path, "other")]


async def test_the_least_recently_used_leave_first_and_a_get_refreshes(tmp_path):
    content = b"x" * 1000
    tier = DiskTier(tmp_path, max_bytes=3 * entry_size("a", content))
    for key in "abc":
        assert await tier.put(key, content)
    assert await tier.get("a") is not None  # now b is the least recently used
    assert await tier.put("d", content)
    assert [await tier.get(key) is not None for key in "abcd"] == [True, False, True, True]
    assert not entry_path(tmp_path, "b").exists()
    assert tier.size() == 3 * entry_size("a", content) == tier.max_bytes
    # a, c and d were just read in that order: a leaves next.
    assert await tier.put("e", content)
    assert not entry_path(tmp_path, "a").exists()
    assert tier.size() <= tier.max_bytes


async def test_an_entry_larger_than_the_limit_is_refused(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=entry_size("k", b"x" * 100))
    assert await tier.put("k", b"x" * 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a refusal is not a failure: no warning
        assert not await tier.put("k", b"x" * 101)
    # The old body must not answer for the new one.
    assert await tier.get("k") is None
    assert files_in(tmp_path) == []
    assert tier.size() == 0


async def test_a_zero_limit_keeps_nothing(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=0)
    assert not await tier.put("k", b"")
    assert files_in(tmp_path) == []
    with pytest.raises(ValueError, match="max_bytes must be 0 or more"):
        DiskTier(tmp_path, max_bytes=-1)


def flip_byte(offset: int) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))

    return damage


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def extend(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0")


def empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(flip_byte(-40), id="content byte flipped"),
        pytest.param(flip_byte(-1), id="checksum byte flipped"),
        pytest.param(flip_byte(0), id="magic byte flipped"),
        pytest.param(flip_byte(8), id="version changed"),
        pytest.param(flip_byte(32), id="content length changed"),
        pytest.param(truncate, id="truncated"),
        pytest.param(extend, id="grown"),
        pytest.param(empty, id="empty"),
    ],
)
async def test_a_damaged_file_reads_as_absent_and_is_removed(tmp_path, damage):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    assert await tier.put("k", b"some content" * 10, meta=b"meta")
    await tier.put("other", b"kept")
    damage(entry_path(tmp_path, "k"))
    assert await tier.get("k") is None
    assert not entry_path(tmp_path, "k").exists()
    assert tier.size() == entry_size("other", b"kept")
    assert await tier.get("other") == (b"kept", b"")


async def test_a_file_holding_another_key_is_never_returned(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    assert await tier.put("mine", b"my body")
    target = entry_path(tmp_path, "theirs")
    target.parent.mkdir(mode=0o700, exist_ok=True)
    target.write_bytes(entry_path(tmp_path, "mine").read_bytes())  # valid, for another key
    assert await tier.get("theirs") is None
    assert not target.exists()
    assert await tier.get("mine") == (b"my body", b"")


async def test_a_key_of_the_same_length_in_the_file_is_refused_too(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    assert await tier.put("key-1", b"body one")
    target = entry_path(tmp_path, "key-2")
    target.parent.mkdir(mode=0o700, exist_ok=True)
    target.write_bytes(entry_path(tmp_path, "key-1").read_bytes())
    assert tier.get_blocking("key-2") is None
    assert not target.exists()


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root ignores permissions: the directory stays writable"
)
async def test_an_unwritable_directory_refuses_puts_and_warns_once(tmp_path):
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o500)
    tier = DiskTier(directory, max_bytes=MiB)
    try:
        with pytest.warns(DiskCacheWarning, match=f"disk cache in {directory}") as caught:
            assert not await tier.put("k", b"body")
            assert not await tier.put("k2", b"body")
        assert len(caught) == 1
        assert "Permission denied" in str(caught[0].message)
        assert caught[0].filename == __file__  # points at the caller's put
        assert await tier.get("k") is None
        assert tier.size() == 0
    finally:
        directory.chmod(0o700)


async def test_a_directory_that_is_a_file_refuses_puts_and_warns_once(tmp_path):
    directory = tmp_path / "cache"
    directory.write_bytes(b"not a directory")
    tier = DiskTier(directory, max_bytes=MiB)
    with pytest.warns(DiskCacheWarning, match="Reported once per cache") as caught:
        assert not await tier.put("k", b"body")
        assert not await tier.put("k", b"body")
        assert await tier.get("k") is None
        await tier.remove("k")
        assert tier.get_blocking("k") is None
    assert len(caught) == 1
    assert caught[0].filename == __file__
    assert directory.read_bytes() == b"not a directory"


async def test_a_failed_write_keeps_nothing_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    assert await tier.put("k", b"old body")

    def full(*args: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(disk, "_write_all", full)
    with pytest.warns(DiskCacheWarning, match="No space left on device") as caught:
        assert not await tier.put("k", b"new body")
        assert not await tier.put("k2", b"new body")
    assert len(caught) == 1
    assert files_in(tmp_path) == []  # neither the temporary file nor the old body
    assert tier.size() == 0
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per tier: recovered, later failures are quiet
        assert await tier.put("k", b"new body")
    assert await tier.get("k") == (b"new body", b"")


async def test_a_fresh_tier_counts_the_entries_it_finds_and_orders_them_by_mtime(tmp_path):
    content = b"y" * 500
    one = entry_size("a", content)
    old = DiskTier(tmp_path, max_bytes=3 * one)
    for key in "abc":
        assert await old.put(key, content)
    now = time.time()
    for age, key in [(300, "b"), (200, "c"), (100, "a")]:  # b is the least recently used
        os.utime(entry_path(tmp_path, key), (now - age, now - age))
    folder = entry_path(tmp_path, "a").parent
    (folder / ".tmp-stale").write_bytes(b"left by a crash")
    os.utime(folder / ".tmp-stale", (now - 2 * 3600, now - 2 * 3600))
    (folder / ".tmp-fresh").write_bytes(b"another process, writing")
    (tmp_path / "README").write_bytes(b"not an entry")

    fresh = DiskTier(tmp_path, max_bytes=3 * one)
    assert fresh.size() == 0  # not scanned yet: nothing has touched the directory
    assert await fresh.get("missing") is None
    assert fresh.size() == 3 * one
    assert not (folder / ".tmp-stale").exists()
    assert (folder / ".tmp-fresh").exists()
    assert (tmp_path / "README").exists()

    assert await fresh.put("d", content)
    assert not entry_path(tmp_path, "b").exists()
    assert [entry_path(tmp_path, key).exists() for key in "acd"] == [True] * 3
    assert await fresh.get("a") == (content, b"")


async def test_a_read_touches_the_file_so_the_next_process_keeps_it(tmp_path):
    content = b"z" * 200
    one = entry_size("a", content)
    tier = DiskTier(tmp_path, max_bytes=2 * one)
    await tier.put("a", content)
    await tier.put("b", content)
    past = time.time() - 600
    for key, age in [("a", 0), ("b", 300)]:
        os.utime(entry_path(tmp_path, key), (past - age, past - age))
    assert await tier.get("a") is not None  # a's mtime is now: b is the older
    fresh = DiskTier(tmp_path, max_bytes=2 * one)
    assert await fresh.put("c", content)
    assert [entry_path(tmp_path, key).exists() for key in "abc"] == [True, False, True]


async def test_a_fresh_tier_with_a_smaller_limit_evicts_the_oldest_down_to_it(tmp_path):
    content = b"w" * 300
    one = entry_size("a", content)
    tier = DiskTier(tmp_path, max_bytes=3 * one)
    for age, key in [(30, "a"), (20, "b"), (10, "c")]:
        await tier.put(key, content)
        os.utime(entry_path(tmp_path, key), (time.time() - age,) * 2)
    smaller = DiskTier(tmp_path, max_bytes=one)
    assert await smaller.get("c") == (content, b"")
    assert smaller.size() == one
    assert files_in(tmp_path) == [entry_path(tmp_path, "c")]


async def test_an_entry_written_by_another_process_is_counted_once_read(tmp_path):
    content = b"v" * 100
    one = entry_size("a", content)
    mine = DiskTier(tmp_path, max_bytes=2 * one)
    theirs = DiskTier(tmp_path, max_bytes=2 * one)
    await mine.put("a", content)  # both scan here: an empty directory
    await theirs.put("b", content)
    assert mine.size() == one
    assert await mine.get("b") == (content, b"")
    assert mine.size() == 2 * one
    await theirs.remove("a")  # another process's removal: simply absent
    assert await mine.get("a") is None
    assert mine.size() == one


async def test_permissions(tmp_path):
    directory = tmp_path / "cache"
    tier = DiskTier(directory, max_bytes=MiB)
    assert await tier.put("k", b"private")
    path = entry_path(directory, "k")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_large_body_is_written_and_read_off_the_loop(tmp_path):
    # The test's own work with 32 MiB (making, comparing and freeing it) would
    # stall the loop for tens of milliseconds on a busy machine: it runs on a
    # worker thread too, and os.urandom releases the GIL where repeating a
    # pattern 32 MiB long would hold it, so only the tier's work is measured.
    tier = DiskTier(tmp_path, max_bytes=64 * MiB)
    held = [await asyncio.to_thread(os.urandom, 32 * MiB)]
    assert await tier.put("large", held[0], meta=b"application/octet-stream")
    found = await tier.get("large")
    assert found is not None
    held.append(found[0])
    del found
    assert await asyncio.to_thread(lambda: held[0] == held[1])
    await asyncio.to_thread(held.clear)


class _RecordingOs:
    """The ``os`` module, recording which thread calls each function."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(os, name)
        if not callable(value) or isinstance(value, type):
            return value

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, threading.get_ident()))
            return value(*args, **kwargs)

        return recorded


async def test_no_file_operation_runs_on_the_loop(tmp_path, monkeypatch):
    recording = _RecordingOs()
    monkeypatch.setattr(disk, "os", recording)
    DiskTier(tmp_path, max_bytes=MiB)  # touches nothing
    assert recording.calls == []
    old = DiskTier(tmp_path, max_bytes=MiB)
    await old.put("old", b"found by the scan")
    tier = DiskTier(tmp_path, max_bytes=MiB)
    await tier.put("k", b"body")
    await tier.get("k")
    await tier.get("missing")
    await tier.remove("k")
    await tier.put("too large", b"x" * MiB)
    tier.size()
    names = {name for name, _ in recording.calls}
    assert {"scandir", "makedirs", "replace", "open", "read", "unlink"} <= names
    loop_thread = threading.get_ident()
    assert [name for name, thread in recording.calls if thread == loop_thread] == []


def test_get_blocking_reads_without_a_loop(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    asyncio.run(tier.put("k", b"body", meta=b"m"))
    assert tier.get_blocking("k") == (b"body", b"m")
    assert tier.get_blocking("missing") is None
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(DiskTier(tmp_path, MiB).get_blocking, "k").result() == (b"body", b"m")


def test_a_read_makes_no_second_copy_of_the_body(tmp_path):
    tier = DiskTier(tmp_path, max_bytes=64 * MiB)
    asyncio.run(tier.put("large", b"\x5a" * (32 * MiB)))
    tracemalloc.start()
    try:
        found = tier.get_blocking("large")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found is not None
    assert len(found[0]) == 32 * MiB
    assert peak < 33 * MiB


def test_a_short_read_is_assembled_whole(tmp_path, monkeypatch):
    tier = DiskTier(tmp_path, max_bytes=MiB)
    content = body("k", 0, 100_000)
    tier.get_blocking("k")
    asyncio.run(tier.put("k", content))
    real_read = os.read
    monkeypatch.setattr(disk.os, "read", lambda fd, n: real_read(fd, min(n, 1000)))
    assert tier.get_blocking("k") == (content, b"")


async def test_concurrent_tasks_read_whole_bodies_while_they_are_replaced(tmp_path):
    keys = [f"key-{number}" for number in range(4)]
    size = 64 * 1024
    tier = DiskTier(tmp_path, max_bytes=len(keys) * entry_size(keys[0], b"x" * size))
    versions = range(8)
    bodies = {key: [body(key, version, size) for version in versions] for key in keys}
    for key in keys:
        assert await tier.put(key, bodies[key][0])

    async def write(key: str) -> None:
        for content in bodies[key]:
            assert await tier.put(key, content)
            assert tier.size() <= tier.max_bytes

    async def read(key: str) -> None:
        for _ in range(16):
            found = await tier.get(key)
            # Never absent (the entries fit), never part of one, never another key's.
            assert found is not None
            assert found[0] in bodies[key]

    await asyncio.gather(*[write(key) for key in keys], *[read(key) for key in keys * 3])
    assert tier.size() == sum(path.stat().st_size for path in files_in(tmp_path))


async def test_concurrent_tasks_stay_within_the_limit(tmp_path):
    size = 10_000
    limit = 5 * entry_size("key-00", b"x" * size)
    tier = DiskTier(tmp_path, max_bytes=limit)

    async def work(number: int) -> None:
        for round_ in range(5):
            key = f"key-{(number + round_) % 20:02}"
            await tier.put(key, body(key, number, size))
            assert tier.size() <= limit
            found = await tier.get(f"key-{(number * 7 + round_) % 20:02}")
            assert found is None or len(found[0]) == size

    await asyncio.gather(*[work(number) for number in range(20)])
    on_disk = sum(path.stat().st_size for path in files_in(tmp_path))
    assert tier.size() == on_disk <= limit
    assert list(tmp_path.rglob(".tmp-*")) == []


def test_concurrent_threads_stay_within_the_limit_and_read_whole_bodies(tmp_path):
    size = 20_000
    keys = [f"key-{number}" for number in range(12)]
    limit = 6 * entry_size(keys[0], b"x" * size)
    tier = DiskTier(tmp_path, max_bytes=limit)
    writers = range(4)
    bodies = {key: [body(key, writer, size) for writer in writers] for key in keys}
    for key in keys[:6]:
        asyncio.run(tier.put(key, bodies[key][0]))
    writing = threading.Event()
    writing.set()
    found_bodies = 0

    async def write(writer: int) -> None:  # each writer thread runs its own loop
        for round_ in range(10):
            key = keys[(writer + round_) % len(keys)]
            assert await tier.put(key, bodies[key][writer])
            assert tier.size() <= limit

    def read(reader: int) -> None:
        nonlocal found_bodies
        round_ = 0
        while writing.is_set() or round_ < 20:
            key = keys[(reader + round_) % len(keys)]
            found = tier.get_blocking(key)
            if found is not None:
                assert found[0] in bodies[key]
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
    on_disk = sum(path.stat().st_size for path in files_in(tmp_path))
    assert tier.size() == on_disk <= limit


async def test_may_have_answers_from_the_index_once_scanned(tmp_path):
    tier = DiskTier(tmp_path, 1 << 20)
    assert tier.may_have("absent")  # not scanned yet: it cannot know
    assert await tier.get("absent") is None  # scans
    assert not tier.may_have("absent")
    assert await tier.put("present", b"body")
    assert tier.may_have("present")
