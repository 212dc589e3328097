"""The disk tier: one SQLite database shared by every process on the machine.

A :class:`DiskTier` keeps records (see ``tier``) in :data:`DATABASE` in its
directory, in WAL mode: readers never wait for a writer, and every process
that opens the file sees what the others wrote as soon as it is committed.
A record is one row (key, version, meta, body, and their SHA-256, checked on
every read: SQLite checks its own structure, not what a page holds), so a
body and the headers it came with are written, replaced and removed together;
a ``304`` refreshes the row only if it is still the version the request was
conditioned on.

One budget for the whole directory, whatever the number of processes: the
total size of the rows is counted in the database itself (triggers keep it),
and every write makes room first, in the same transaction: it evicts the
least recently used rows until the total with its own row is within
``max_bytes``, and the row takes their pages. Recency is written at most once
a minute per row. Pages left free go back to the file system as the
transaction commits (``auto_vacuum = FULL``), so no committed state of the
file holds more than its rows and their pages' slack. The write-ahead log is
truncated to :data:`WAL_LIMIT` after a checkpoint; a write that finds it grown
past that (processes that keep reading and writing starve SQLite's own
checkpoints) checkpoints and truncates it if no reader holds it for 100 ms.
The directory holds ``max_bytes`` of rows, their pages' slack, and the log:
at most :data:`WAL_LIMIT` once a write has found it grown, more for as long as
several processes write without a pause.

A process killed mid-write leaves nothing: SQLite rolls the transaction back
when the database is next opened, and a claim it held expires by itself.

Nothing untrusted is read: the directory must be owned by this user and
writable by nobody else, and so must the database files (see
:func:`unsafe`), and no directory above it may let others replace it
(writable by group or others without the sticky bit ``/tmp`` has, or owned by
another user than root); directories created here are ``0o700`` and the
database ``0o600``, whatever the umask. A directory that
fails the check, a full or read-only disk, or a damaged database make the
tier keep nothing, with a :class:`DiskCacheWarning` per kind of failure.

Threads: reads run on two worker threads (``worker_threads``), writes on a third,
so that a lookup never waits behind a large body being written, and the writes of
one process never wait for each other in SQLite's busy handler (which sleeps 1 ms,
then 2, 5...): only for another process's. A lookup that finds nothing is then
claimed on the writing thread. A call takes a connection from the tier's idle ones,
or opens one. Connections are not carried into a child after ``fork()``: it opens
its own. Knows nothing of llm or HTTP.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sqlite3
import stat
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from ..errors import DiskCacheWarning
from .tier import NOT_WORTH_WAITING, Claim, Record, Warner, key_digest
from .worker_threads import WorkerThreads

__all__ = ["DATABASE", "NOT_WORTH_WAITING", "WAL_LIMIT", "DiskTier", "unsafe"]

T = TypeVar("T")

DATABASE = "responses-1.sqlite3"
"""The database's file name; its number changes with its schema (an old file is left)."""
WAL_LIMIT = 16 * 1024 * 1024
"""Bytes the write-ahead log is truncated to after a checkpoint."""
_ROW_OVERHEAD = 128  # bytes counted per row beyond its meta and body (key, version, numbers)
_TOUCH_EVERY = 60.0  # seconds: recency is written at most this often per row
_BUSY_MS = 5000  # how long a write waits for another process's
_CHECKPOINT_WAIT_MS = 100  # how long a checkpoint of a grown log waits for readers
_READS = WorkerThreads(2, "llm-async-attachments-disk-read")  # see "Threads" above
_WRITES = WorkerThreads(1, "llm-async-attachments-disk-write")
_WRITING = threading.RLock()  # see _writing
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY, version TEXT NOT NULL, meta BLOB NOT NULL, body BLOB NOT NULL,
    size INTEGER NOT NULL, used REAL NOT NULL, expires REAL NOT NULL,
    body_sum BLOB NOT NULL, meta_sum BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS records_used ON records (used);
CREATE INDEX IF NOT EXISTS records_expires ON records (expires);
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, token TEXT, until REAL NOT NULL);
CREATE INDEX IF NOT EXISTS claims_until ON claims (until);
CREATE TABLE IF NOT EXISTS total (one INTEGER PRIMARY KEY CHECK (one = 1), bytes INTEGER);
INSERT OR IGNORE INTO total VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS counted AFTER INSERT ON records
    BEGIN UPDATE total SET bytes = bytes + new.size; END;
CREATE TRIGGER IF NOT EXISTS uncounted AFTER DELETE ON records
    BEGIN UPDATE total SET bytes = bytes - old.size; END;
CREATE TRIGGER IF NOT EXISTS recounted AFTER UPDATE OF size ON records
    BEGIN UPDATE total SET bytes = bytes - old.size + new.size; END;
"""
_ADVICE = {
    "SQLITE_FULL": "The disk is full: free space, or lower disk_cache_bytes.",
    "SQLITE_IOERR": "A read or write failed: the disk may be full, or failing.",
    "SQLITE_READONLY": "The database is read-only: check the directory's file system.",
    "SQLITE_CANTOPEN": "Check that the directory exists and is writable.",
    "SQLITE_NOTADB": "The database is damaged: delete the directory to start afresh.",
    "SQLITE_CORRUPT": "The database is damaged: delete the directory to start afresh.",
}


def unsafe(path: Path, *, directory: bool) -> str | None:
    """Why ``path`` may not be trusted with cached content (another user owns it, or
    group or others may write it, or it is not a plain directory or file); ``None``
    if it may, or does not exist."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    kind = stat.S_ISDIR if directory else stat.S_ISREG
    if not kind(info.st_mode):
        return f"{path} is not a {'directory' if directory else 'regular file'}"
    if info.st_uid != os.geteuid():
        return f"{path} is owned by user {info.st_uid}, not this process's ({os.geteuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} can be written by its group or others (mode {info.st_mode & 0o777:o})"
    return None


def _unsafe_parent(path: Path) -> str | None:
    """Why a directory above the tier's may not be trusted: others could replace what is
    under it (writable by group or others without the sticky bit, as ``/tmp`` has), or
    it is another user's (root's excepted)."""
    info = os.stat(path)
    if info.st_uid not in (0, os.geteuid()):
        return f"{path}, above the cache, is owned by user {info.st_uid}"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        mode = info.st_mode & 0o777
        return f"{path}, above the cache, can be written by its group or others (mode {mode:o})"
    return None


def _make_directories(directory: Path) -> None:
    """``directory`` and any missing parents, each ``0o700`` whatever the umask."""
    missing = []
    for path in (directory, *directory.absolute().parents):
        if os.path.lexists(path):
            break
        missing.append(path)
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
            os.chmod(path, 0o700)  # the umask may have taken bits the mode left


class DiskTier:
    """Records in ``directory``/:data:`DATABASE`, at most ``max_bytes`` of them."""

    name = "disk"

    def __init__(self, directory: Path, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 or more, not {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._idle: list[tuple[sqlite3.Connection, int]] = []
        self._generation = 0  # of connections: close() starts the next
        self._lock = threading.Lock()
        self._opened = False
        self._refused: str | None = None
        self._warner = Warner(DiskCacheWarning, f"disk cache in {self.directory}")
        _tiers.add(self)

    async def get(self, key: str) -> Record | None:
        return await self._run(_READS, "read an entry", None, self._get, key)

    def get_blocking(self, key: str) -> Record | None:
        """:meth:`get` in the calling thread: for worker threads and sync code, never a loop."""
        return self._call("read an entry", None, self._get, key)

    async def put(self, key: str, body: bytes, meta: bytes, keep_for: float) -> str | None:
        return await self._run(
            _WRITES, "write an entry", None, self._put, key, body, meta, keep_for
        )

    async def refresh(self, key: str, version: str, meta: bytes, keep_for: float) -> bool:
        return await self._run(
            _WRITES, "refresh an entry", False, self._refresh, key, version, meta, keep_for
        )

    async def remove(self, key: str, version: str) -> None:
        await self._run(_WRITES, "remove an entry", None, self._remove, key, version)

    async def find_or_claim(self, key: str, seconds: float) -> Record | Claim | None:
        record = await self.get(key)  # the usual answer, without the write lock
        if record is not None:
            return record
        return await self._run(_WRITES, "claim a fetch", None, self._claim, key, seconds)

    async def release(self, key: str, token: str, *, mark: bool) -> None:
        await self._run(_WRITES, "release a fetch", None, self._release, key, token, mark)

    def size(self) -> int:
        """Bytes of the records the database counts now (blocking: not on an event loop)."""
        return self._call("count entries", 0, self._size)

    def close(self) -> None:
        """Close the idle connections (those in use close when they are given back)."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._opened = False
            self._generation += 1
        for connection, _generation in idle:
            connection.close()

    # Worker-thread side.

    async def _run(
        self,
        threads: WorkerThreads,
        action: str,
        empty: T,
        work: Callable[..., T],
        *args: object,
    ) -> T:
        return await threads.run(functools.partial(self._call, action, empty, work, *args))

    def _call(self, action: str, empty: T, work: Callable[..., T], *args: object) -> T:
        if self._refused is not None:
            return empty
        try:
            return work(*args)
        except _Refused:
            pass  # warned when refused
        except sqlite3.Error as exc:
            name = getattr(exc, "sqlite_errorname", type(exc).__name__)
            primary = "_".join(name.split("_")[:2])  # SQLITE_IOERR_WRITE: SQLITE_IOERR
            advice = _ADVICE.get(primary, "Check the directory and its file system.")
            self._warner.warn(f"{action} ({name})", exc, advice)
        except OSError as exc:
            self._warner.warn(f"{action} ({type(exc).__name__})", exc, _ADVICE["SQLITE_CANTOPEN"])
        return empty

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            connection, generation = self._idle.pop() if self._idle else (None, self._generation)
        if connection is None:
            connection = self._connect()
        try:
            yield connection
        finally:
            if connection.in_transaction:
                connection.rollback()
            with self._lock:
                current = generation == self._generation
                if current:
                    self._idle.append((connection, generation))
            if not current:  # closed while it was in use
                connection.close()

    def _connect(self) -> sqlite3.Connection:
        path = self.directory / DATABASE
        if not self._opened:
            self._check(path)
        connection = sqlite3.connect(
            path, timeout=_BUSY_MS / 1000, isolation_level=None, check_same_thread=False
        )
        try:
            _set_up(connection, schema=not self._opened)
            self._opened = True
        except BaseException:
            connection.close()
            raise
        return connection

    def _check(self, path: Path) -> None:
        """Refuse (and warn) a directory or database others could have written; create
        them ``0o700`` and ``0o600`` (SQLite gives its log files the database's mode)."""
        _make_directories(self.directory)
        ends = ("", "-wal", "-shm")
        problems = [_unsafe_parent(parent) for parent in self.directory.absolute().parents]
        problems.append(unsafe(self.directory, directory=True))
        problems += [unsafe(Path(f"{path}{end}"), directory=False) for end in ends]
        refused = next((problem for problem in problems if problem), None)
        if refused is not None:
            self._refused = refused
            self._warner.warn(
                "trust its directory",
                refused,
                "Content cached there could have been planted by someone else: use a "
                "directory only this user can write (one created here is 0700).",
            )
            raise _Refused(refused)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))

    def _size(self) -> int:
        with self._connection() as connection:
            (total,) = connection.execute("SELECT bytes FROM total").fetchone()
        return int(total)

    def _get(self, key: str) -> Record | None:
        with self._connection() as connection:
            return _record(connection, key_digest(key))

    def _claim(self, key: str, seconds: float) -> Record | Claim:
        digest = key_digest(key)
        with self._connection() as connection, _transaction(connection):
            record = _record(connection, digest)  # written since
            if record is not None:
                return record
            now = time.time()
            # Claims and marks that expired leave here, or a tier that is never written to
            # (no response may be kept) would keep every one.
            connection.execute("DELETE FROM claims WHERE until <= ?", (now,))
            row = connection.execute("SELECT token FROM claims WHERE key = ?", (digest,)).fetchone()
            if row is not None:
                return Claim(None, row[0] is not None)
            token = uuid.uuid4().hex
            connection.execute(
                "INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (digest, token, now + seconds)
            )
        return Claim(token, False)

    def _put(self, key: str, body: bytes, meta: bytes, keep_for: float) -> str | None:
        digest, version = key_digest(key), uuid.uuid4().hex
        size = len(body) + len(meta) + _ROW_OVERHEAD
        sums = (_checksum(body), _checksum(meta))
        with self._connection() as connection:
            with _transaction(connection):
                now = time.time()  # once the lock is ours: newer than every row
                connection.execute(
                    "DELETE FROM records WHERE key = ? OR expires <= ?", (digest, now)
                )
                connection.execute("DELETE FROM claims WHERE key = ?", (digest,))  # ends a claim
                if size > self.max_bytes:
                    return None
                # Room first, so the row takes the pages of those it evicts.
                _evict(connection, self.max_bytes - size, digest)
                connection.execute(
                    "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (digest, version, meta, body, size, now, now + keep_for, *sums),
                )
            self._tidy(connection)
        return version

    def _refresh(self, key: str, version: str, meta: bytes, keep_for: float) -> bool:
        digest = key_digest(key)
        with self._connection() as connection:
            with _transaction(connection):
                now = time.time()
                changed = connection.execute(
                    "UPDATE records SET meta = ?, size = size - length(meta) + ?, used = ?, "
                    "expires = ?, meta_sum = ? "
                    "WHERE key = ? AND version = ?",
                    (meta, len(meta), now, now + keep_for, _checksum(meta), digest, version),
                ).rowcount
                if changed:
                    _evict(connection, self.max_bytes, digest)
            self._tidy(connection)
        return bool(changed)

    def _tidy(self, connection: sqlite3.Connection) -> None:
        """After a write: a log grown past :data:`WAL_LIMIT` (processes that kept reading
        starved SQLite's own checkpoints) is checkpointed and truncated if no reader holds
        it now. Best effort: the write is done whatever happens here."""
        with contextlib.suppress(sqlite3.Error, OSError), _writing():
            self._checkpoint_grown_log(connection)

    def _checkpoint_grown_log(self, connection: sqlite3.Connection) -> None:
        try:
            grown = os.stat(f"{self.directory / DATABASE}-wal").st_size > WAL_LIMIT
        except FileNotFoundError:
            grown = False
        if grown:
            connection.execute(f"PRAGMA busy_timeout = {_CHECKPOINT_WAIT_MS}")
            try:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                connection.execute(f"PRAGMA busy_timeout = {_BUSY_MS}")

    def _remove(self, key: str, version: str) -> None:
        with self._connection() as connection, _transaction(connection):
            connection.execute(
                "DELETE FROM records WHERE key = ? AND version = ?", (key_digest(key), version)
            )

    def _release(self, key: str, token: str, mark: bool) -> None:
        digest = key_digest(key)
        with self._connection() as connection, _transaction(connection):
            if mark:
                connection.execute(
                    "UPDATE claims SET token = NULL, until = ? WHERE key = ? AND token = ?",
                    (time.time() + NOT_WORTH_WAITING, digest, token),
                )
            else:
                connection.execute(
                    "DELETE FROM claims WHERE key = ? AND token = ?", (digest, token)
                )


_tiers: weakref.WeakSet[DiskTier] = weakref.WeakSet()


def _forked() -> None:
    """In a child after ``fork()``: a SQLite connection must not cross it. The parent's
    are dropped, unclosed (closing one could release the parent's locks), and the write
    lock is new (a thread of the parent's may have held it)."""
    global _WRITING
    _WRITING = threading.RLock()
    for tier in list(_tiers):
        tier._idle, tier._lock = [], threading.Lock()


os.register_at_fork(after_in_child=_forked)


class _Damaged(sqlite3.DatabaseError):
    """A record whose bytes are not those written: read as absent, and removed."""

    sqlite_errorname = "SQLITE_CORRUPT"


class _Refused(OSError):
    """The directory was refused (already warned): the tier keeps nothing."""


def _record(connection: sqlite3.Connection, digest: str) -> Record | None:
    """The record of ``digest`` unless expired; its recency written if a minute old."""
    now = time.time()
    row = connection.execute(
        "SELECT body, meta, version, used, body_sum, meta_sum FROM records "
        "WHERE key = ? AND expires > ?",
        (digest, now),
    ).fetchone()
    if row is None:
        return None
    body, meta, version, used, body_sum, meta_sum = row
    if (body_sum, meta_sum) != (_checksum(body), _checksum(meta)):
        # SQLite checks its own structure, not what a page holds: a damaged body is gone.
        with _writing():
            connection.execute(
                "DELETE FROM records WHERE key = ? AND version = ?", (digest, version)
            )
        raise _Damaged(f"the record of {digest[:16]}... does not match its checksum")
    if used < now - _TOUCH_EVERY:
        with _writing():
            connection.execute("UPDATE records SET used = ? WHERE key = ?", (now, digest))
    return Record(body, meta, version)


def _checksum(data: bytes) -> bytes:
    """SHA-256 of a body or a meta (hashlib releases the GIL while it hashes a large one)."""
    return hashlib.sha256(data).digest()


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    """This process's writes, one at a time: SQLite takes one writer per database
    anyway, and a second thread of ours that asked for the lock meanwhile would sleep in
    SQLite's busy handler (1 ms, then 2, 5, 10...) rather than wait for the first. Only
    other processes' writes are left to the busy timeout."""
    with _WRITING:
        yield


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """A write transaction, taken at once (so two processes never upgrade and deadlock)."""
    with _writing():
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            connection.rollback()
            raise
        connection.commit()


def _set_up(connection: sqlite3.Connection, *, schema: bool) -> None:
    """A new connection's settings, and the tables if ``schema``. Processes opening a
    new database at once contend for it (switching to WAL, creating the tables), and
    SQLite refuses the loser at once rather than after the busy timeout: retried."""
    deadline = time.monotonic() + _BUSY_MS / 1000
    while True:
        try:
            # Before the first table: then every commit hands freed pages back.
            connection.execute("PRAGMA auto_vacuum = FULL")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
            if schema:
                connection.executescript(_SCHEMA)
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _evict(connection: sqlite3.Connection, max_bytes: int, kept: str) -> None:
    """Delete the least recently used rows but ``kept`` (the one being written) until the
    total is within ``max_bytes``."""
    (total,) = connection.execute("SELECT bytes FROM total").fetchone()
    excess = total - max_bytes
    while excess > 0:
        rows = connection.execute(
            "SELECT key, size FROM records WHERE key != ? ORDER BY used LIMIT 16", (kept,)
        ).fetchall()
        if not rows:
            break
        for key, size in rows:
            if excess <= 0:
                break
            connection.execute("DELETE FROM records WHERE key = ?", (key,))
            excess -= size
