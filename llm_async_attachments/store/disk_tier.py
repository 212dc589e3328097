"""A bounded on-disk cache of bodies: the tier that content evicted from memory goes to.

A :class:`DiskTier` is a directory of files, one per key, with a size limit;
the least recently used leave first. It knows nothing of llm or HTTP: a key
is any string (a URL and the settings it was fetched with), a body is bytes,
and ``meta`` is whatever small bytes the caller keeps with it.

Layout: each file is named for the SHA-256 of its key, in one of 256
subdirectories named for the first two hex digits (``ab/abcd…``). The
directory is created ``0o700`` and the files ``0o600``: cached content may be
private. A file holds a header (magic, format version, three lengths), the
key, the meta, the content and a SHA-256 checksum of everything before it.
A file that is truncated, corrupt, of another format version, or holds
another key (a file from elsewhere, or a hash collision) is never returned:
it reads as absent, and is removed.

Writes go to a temporary file in the same subdirectory, then ``os.replace``
it over the entry: a reader sees the old file or the new one, never part of
either. There is no ``fsync``: after a crash an entry may be lost or torn, and
a torn one fails its checksum. A crash mid-write leaves a temporary file,
which the scan of a later process removes once it is an hour old.

Nothing here blocks the event loop: the async methods do every file
operation, and the one scan of the directory that builds the size index, on a
worker thread (``asyncio.to_thread``). The index (file size and recency per
entry) is guarded by a ``threading.Lock``, held for in-memory bookkeeping and
quick metadata calls (rename, unlink, stat), never while a body is read or
written; :meth:`DiskTier.size` does not take it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import stat
import struct
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path

__all__ = ["STALE_TEMP_SECONDS", "DiskCacheWarning", "DiskTier"]

STALE_TEMP_SECONDS = 3600.0
"""A temporary file older than this is left from a crashed write; a scan removes it.

A younger one may be another process's write in progress, and is left alone.
"""

_MAGIC = b"laa-disk"
_VERSION = 1
# Magic, version, padding, then the lengths of the key, the meta and the content.
_HEADER = struct.Struct("<8sB7xQQQ")
_DIGEST_SIZE = 32
# SHA-256, not BLAKE2b: with the CPU's SHA extensions (OpenSSL uses them) it hashed
# 32 MiB in 30 ms where BLAKE2b took 70 to 150 ms; both release the GIL.
_checksum = hashlib.sha256
_TEMP_PREFIX = ".tmp-"
_HEX = frozenset("0123456789abcdef")


class DiskCacheWarning(RuntimeWarning):
    """The disk cache could not be written or read; entries are not kept on disk.

    Issued once per :class:`DiskTier`, at the first failure (disk full, a
    read-only or unwritable directory, ...). The cache carries on: a failed
    write keeps nothing and a failed read is a miss.
    """


class DiskTier:
    """A directory of cached bodies with a size limit; least recently used leave first.

    ``max_bytes`` bounds the total size of the entry files, each counted
    whole (header, key, meta, content and checksum: about 80 bytes plus the
    key, the meta and the content). An entry larger than that is refused.

    The limit holds for this process's view of the directory. Other
    processes may share it: each keeps its own index, so together they can
    exceed the limit for a while, until their own writes make them evict or
    a new process scans the directory again. A file another process removed
    is simply absent, and a valid file found by :meth:`get` that this
    process did not know of is counted from then on.

    The directory is scanned once, on a worker thread, by the first call
    that touches it (:meth:`put`, :meth:`get`, :meth:`get_blocking` or
    :meth:`remove`): existing entries are counted and ordered by their
    modification time (each read touches it), and temporary files older than
    :data:`STALE_TEMP_SECONDS` are removed.

    Example::

        tier = DiskTier(Path.home() / ".cache" / "attachments", max_bytes=512 * 1024 * 1024)
        if await tier.put(url, body, meta=b"image/png"):
            ...
        found = await tier.get(url)  # (body, meta), or None
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 or more, not {max_bytes}")
        self._directory = Path(directory)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()  # guards _index and _total
        self._index: OrderedDict[str, int] = OrderedDict()  # file name -> size; oldest use first
        self._total = 0
        self._scan_lock = threading.Lock()
        self._scanned = False
        self._warn_lock = threading.Lock()
        self._warned = False

    @property
    def directory(self) -> Path:
        """Where the entries are kept."""
        return self._directory

    @property
    def max_bytes(self) -> int:
        """The size limit of this process's view of the directory, in bytes."""
        return self._max_bytes

    def size(self) -> int:
        """Bytes of the entries this process counts now (0 until the directory is scanned)."""
        return self._total

    @property
    def scanned(self) -> bool:
        """Whether this process has read the directory's entries (:meth:`scan`)."""
        return self._scanned

    async def scan(self) -> None:
        """Read the directory's entries, off the loop, if not done yet (every method
        that touches the disk does this first; :meth:`may_have` needs it done)."""
        if not self._scanned:
            try:
                await asyncio.to_thread(self._ensure_scanned)
            except OSError as exc:
                self._warn_once("read the directory", exc)

    def may_have(self, key: str) -> bool:
        """Whether an entry for ``key`` may be on disk, without touching the disk: false
        only once the directory was scanned and this process knows of no such entry
        (another process may have written one since; it is found once this one looks)."""
        return not self._scanned or _name(_encode(key)) in self._index

    async def put(self, key: str, content: bytes, meta: bytes = b"") -> bool:
        """Keep ``content`` and ``meta`` under ``key``, replacing any entry it had.

        Then evicts the least recently used entries until the total is within
        ``max_bytes``. Returns ``False``, keeping nothing for ``key`` (not
        even an entry it had before), when the entry is larger than
        ``max_bytes`` or the write failed; a failure never raises, and the
        first one issues a :class:`DiskCacheWarning`.
        """
        try:
            return await asyncio.to_thread(self._put, key, content, meta)
        except OSError as exc:
            self._warn_once("write an entry", exc)
            return False

    async def get(self, key: str) -> tuple[bytes, bytes] | None:
        """``(content, meta)`` kept under ``key``, or ``None``; the entry is then the most recent.

        ``None`` when there is no entry, or its file is truncated, corrupt or
        holds another key (such a file is removed), or cannot be read (the
        first such failure issues a :class:`DiskCacheWarning`).

        The content is read straight into the ``bytes`` returned: no copy,
        unless the operating system returns it in several reads (not the
        case for a regular file under 2 GiB on Linux), when it is assembled
        in a ``bytearray`` and copied once.
        """
        try:
            return await asyncio.to_thread(self._get, key)
        except OSError as exc:
            self._warn_once("read an entry", exc)
            return None

    def get_blocking(self, key: str) -> tuple[bytes, bytes] | None:
        """:meth:`get` in the calling thread: for worker threads and sync code, never a loop."""
        try:
            return self._get(key)
        except OSError as exc:
            self._warn_once("read an entry", exc)
            return None

    async def remove(self, key: str) -> None:
        """Remove the entry kept under ``key``, if there is one."""
        try:
            await asyncio.to_thread(self._remove, _name(_encode(key)))
        except OSError as exc:
            self._warn_once("remove an entry", exc)

    # Worker-thread side: everything below touches files.

    def _put(self, key: str, content: bytes, meta: bytes) -> bool:
        self._ensure_scanned()
        key_bytes = _encode(key)
        name = _name(key_bytes)
        head = _HEADER.pack(_MAGIC, _VERSION, len(key_bytes), len(meta), len(content))
        size = len(head) + len(key_bytes) + len(meta) + len(content) + _DIGEST_SIZE
        if size > self._max_bytes:
            self._remove(name)  # the old body must not stand in for the new one
            return False
        folder = self._directory / name[:2]
        try:
            os.makedirs(self._directory, mode=0o700, exist_ok=True)
            os.makedirs(folder, mode=0o700, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=folder)  # mode 0o600
            try:
                try:
                    checksum = _checksum(head)
                    for part in (key_bytes, meta, content):
                        checksum.update(part)
                    for part in (head, key_bytes, meta, content, checksum.digest()):
                        _write_all(fd, part)
                finally:
                    os.close(fd)
                with self._lock:
                    os.replace(temp, folder / name)
                    self._count(name, size)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        except OSError:
            with contextlib.suppress(OSError):
                self._remove(name)
            raise
        return True

    def _get(self, key: str) -> tuple[bytes, bytes] | None:
        self._ensure_scanned()
        key_bytes = _encode(key)
        name = _name(key_bytes)
        path = self._directory / name[:2] / name
        try:
            # O_NONBLOCK: a FIFO planted under an entry's name cannot hang the worker.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            with self._lock:
                if not os.path.lexists(path):  # another process removed it
                    self._uncount(name)
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            found = _read_entry(fd, info.st_size, key_bytes)
            if found is not None:
                # Through the descriptor: the file read, even if since replaced. A
                # file of another user (a shared directory) may refuse it.
                with contextlib.suppress(OSError):
                    os.utime(fd)
        finally:
            os.close(fd)
        with self._lock:
            if found is None:
                # Unless it was replaced meanwhile, by a write that counted the new file.
                if _same_file(path, info):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    self._uncount(name)
            elif name in self._index:
                self._index.move_to_end(name)
            elif _same_file(path, info):  # written by another process: counted from now on
                self._count(name, info.st_size)
        return found

    def _remove(self, name: str) -> None:
        self._ensure_scanned()
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._directory / name[:2] / name)
            self._uncount(name)

    def _count(self, name: str, size: int) -> None:
        """Count ``name`` as the most recent entry, then evict down to the limit (lock held).

        A new entry is within the limit, so it is never evicted here; a file
        found on disk larger than the limit (another process's) is.
        """
        total = self._total + size - self._index.pop(name, 0)
        self._index[name] = size
        while total > self._max_bytes:
            victim, victim_size = self._index.popitem(last=False)
            total -= victim_size
            # A file that cannot be removed is still there, uncounted: a later
            # process's scan counts it again.
            with contextlib.suppress(OSError):
                os.unlink(self._directory / victim[:2] / victim)
        self._total = total  # one store: size(), read without the lock, never sees more

    def _uncount(self, name: str) -> None:
        self._total -= self._index.pop(name, 0)

    def _ensure_scanned(self) -> None:
        if self._scanned:
            return
        with self._scan_lock:
            if self._scanned:
                return
            try:
                found = _scan(self._directory)
            finally:
                self._scanned = True  # a failed scan is reported once, not retried
            with self._lock:
                for _, name, size in sorted(found):  # oldest use first
                    self._count(name, size)

    def _warn_once(self, action: str, exc: OSError) -> None:
        with self._warn_lock:
            if self._warned:
                return
            self._warned = True
        warnings.warn(
            f"The disk cache in {self._directory} could not {action}: {exc}. "
            "Entries are not kept on disk when writes fail; check that the directory "
            "is writable and has free space. (Reported once per cache.)",
            DiskCacheWarning,
            stacklevel=3,
        )


def _encode(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")  # any str, lone surrogates included


def _name(key_bytes: bytes) -> str:
    return hashlib.sha256(key_bytes).hexdigest()


def _same_file(path: Path, info: os.stat_result) -> bool:
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, length: int) -> bytes | None:
    """``length`` bytes from ``fd``, or ``None`` if it ends first.

    One read fills a buffer of exactly that size, the usual case. A short one
    goes on into a ``bytearray``, copied once into the ``bytes`` returned.
    """
    data = os.read(fd, length)
    if len(data) == length:
        return data
    buffer = bytearray(length)
    buffer[: len(data)] = data
    view, got = memoryview(buffer), len(data)
    del data
    with io.FileIO(fd, closefd=False) as file:
        while got < length:
            count = file.readinto(view[got:])
            if not count:
                return None
            got += count
    return bytes(buffer)


def _read_entry(fd: int, size: int, key_bytes: bytes) -> tuple[bytes, bytes] | None:
    """``(content, meta)`` from an entry file of ``size`` bytes, or ``None`` if it is not valid."""
    if size < _HEADER.size + _DIGEST_SIZE:
        return None
    head = _read_exact(fd, _HEADER.size)
    if head is None:
        return None
    magic, version, key_length, meta_length, content_length = _HEADER.unpack(head)
    if (magic, version) != (_MAGIC, _VERSION):
        return None
    if _HEADER.size + key_length + meta_length + content_length + _DIGEST_SIZE != size:
        return None  # truncated, or grown
    if key_length != len(key_bytes) or _read_exact(fd, key_length) != key_bytes:
        return None  # another key's file: its body is not read
    meta = _read_exact(fd, meta_length)
    content = _read_exact(fd, content_length)
    digest = _read_exact(fd, _DIGEST_SIZE)
    if meta is None or content is None or digest is None:
        return None
    checksum = _checksum(head)
    for part in (key_bytes, meta, content):
        checksum.update(part)
    if checksum.digest() != digest:
        return None
    return content, meta


def _scan(directory: Path) -> list[tuple[int, str, int]]:
    """``(mtime_ns, name, size)`` of each entry file; stale temporary files are removed."""
    found: list[tuple[int, str, int]] = []
    stale = time.time() - STALE_TEMP_SECONDS
    try:
        with os.scandir(directory) as entries:
            folders = [entry for entry in entries if _is_folder(entry)]
    except FileNotFoundError:
        return found
    for folder in folders:
        try:
            with os.scandir(folder.path) as entries:
                files = list(entries)
        except FileNotFoundError:
            continue
        for file in files:
            try:
                info = file.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if file.name.startswith(_TEMP_PREFIX):
                if info.st_mtime < stale:
                    with contextlib.suppress(OSError):
                        os.unlink(file.path)
            elif (
                _is_name(file.name) and file.name[:2] == folder.name and stat.S_ISREG(info.st_mode)
            ):
                found.append((info.st_mtime_ns, file.name, info.st_size))
    return found


def _is_folder(entry: os.DirEntry[str]) -> bool:
    return len(entry.name) == 2 and set(entry.name) <= _HEX and entry.is_dir(follow_symlinks=False)


def _is_name(name: str) -> bool:
    return len(name) == 64 and set(name) <= _HEX
