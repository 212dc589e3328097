"""Reading local files without blocking the event loop, under the byte caps.

Each file is read by one job on a worker thread (the loop's default
executor), which does everything that touches the file or its bytes: open
(``O_NONBLOCK``), ``fstat``, the checks, a bounded read, llm's sniff of the
type and the SHA-256 that llm's ``id()`` of a path is. The loop hands the job
over, and when it ends charges its bytes to the call's budget; it never
touches the content. Given a ``wanted`` rule, the job sniffs the type from
the file's two ends first, as llm does, and reads no further when the type
is not wanted.

The GIL: ``os.read`` and ``hashlib`` release it (hashlib for any input over
2 KiB), so a worker reading or hashing a large file leaves the loop free to
run. What holds it is bounded whatever the file's size: the sniff looks at
the first 36 KiB and last 516 bytes only, at a few signatures picked by an
index (:mod:`.mime`: tens of microseconds, where puremagic takes 0.7 ms), and only a file
that is not read in one go (one that grows while read, or a device) is
joined from its pieces. Base64 text for large content is not made here:
that holds the GIL throughout, and runs on :mod:`.offload`'s one lane per loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar, overload

from .. import mime
from ..caps import Meter
from ..errors import AttachmentPathError
from ..loops import PerLoop

__all__ = ["CHUNK_BYTES", "FileContent", "read_path"]

CHUNK_BYTES = 1024 * 1024
"""Bytes asked for per read once the size from ``fstat`` has been read (or when there is none)."""

_FIX = "Check the path, or pass the bytes with content= instead."

JOBS = min(32, (os.cpu_count() or 1) + 4)
"""File jobs one event loop runs at once; the rest wait their turn on the loop, in order.

As many as asyncio's default executor, which runs them, has threads (Python's
own size for I/O-bound work): more would only queue there, in front of the
application's own ``to_thread()`` calls and DNS lookups; and at most this
many files are in memory beyond the total cap (see :func:`read_path`). Handing
300 files to the executor at once took as long and doubled the largest loop
stall (a median of 64 ms against 29 ms on 2 busy cores): every submission ran
in the loop's first iteration.
"""


async def _new_slots() -> asyncio.Semaphore:
    return asyncio.Semaphore(JOBS)


_slots: PerLoop[asyncio.Semaphore] = PerLoop(_new_slots)


Content = TypeVar("Content", bytes, bytes | None)


class FileContent(NamedTuple, Generic[Content]):
    """What one read of a file found: ``FileContent[bytes]`` always has the bytes;
    ``FileContent[bytes | None]`` (a read with ``wanted``) may have only the type."""

    content: Content
    """All the file's bytes; ``None`` when ``wanted`` refused its type, and the rest
    of the file was not read."""
    sha256: str
    """Hex SHA-256 of ``content``: llm's ``id()`` of a path attachment (``""`` without it)."""
    type: str | None
    """The type llm would sniff from the file; ``None`` if not asked or none."""


class _Read(NamedTuple):
    """A job's result: ``content`` is ``None`` when it stopped at a cap, unread or part-read,
    or when ``wanted`` refused the type (``refused``)."""

    size: int | None  # from fstat, for a regular file
    length: int  # bytes of the file read, each counted once
    content: bytes | None
    sha256: str
    type: str | None
    refused: bool = False


Wanted = Callable[[str | None], bool]


@overload
async def read_path(
    path: str, meter: Meter, *, sniff: bool = False, wanted: None = None
) -> FileContent[bytes]: ...


@overload
async def read_path(
    path: str, meter: Meter, *, sniff: bool = False, wanted: Wanted
) -> FileContent[bytes | None]: ...


async def read_path(
    path: str, meter: Meter, *, sniff: bool = False, wanted: Wanted | None = None
) -> FileContent[bytes] | FileContent[bytes | None]:
    """All bytes of ``path`` with their SHA-256 (and, with ``sniff``, their type).

    With ``sniff`` and ``wanted``, the type decides before the body: the job
    reads the file's first and last bytes, the ones ``puremagic.from_file``
    reads for llm, and sniffs the type from them; if ``wanted(type)`` is
    false it returns that type with ``content=None`` and reads no more. Only
    those bytes (about 37 KiB at most) are charged to the budget. A file
    without a size (``/proc`` files, devices) is read whole first, within
    the caps, and its content dropped if its type is not wanted. ``wanted``
    runs on the worker thread: a quick function of the type alone, such as
    :func:`.mime.matches` against a model's ``attachment_types``. The size
    cap comes first, as ``Content-Length`` does for a URL: a file over it
    is refused from its size whatever its type.

    The size from ``fstat`` is checked first, and a file over a cap is
    refused without a byte read. The size is never trusted: reading stops
    as soon as the bytes read pass the cap, so a file that grows while read,
    or a device such as ``/dev/zero``, cannot exhaust memory. Directories,
    FIFOs and sockets are refused with :class:`AttachmentPathError` without
    waiting for a writer, as is every error the operating system reports.

    The caps are checked inside the job, against the room the call's budget
    has as the job runs; the bytes are charged to the budget, and any
    refusal raised, on the loop when the job ends. So files read at the same
    moment by other jobs are counted once they are done: at most
    :data:`JOBS` files, each within ``max_bytes``, can be in memory beyond
    the total cap before the call fails.
    """
    loop = asyncio.get_running_loop()
    async with _slots.running_value() or await _slots.get():
        read = await loop.run_in_executor(None, _read_file, path, lambda: meter.room, sniff, wanted)
    if read.refused:
        meter.add(read.length)  # the ends sniffed, or a file without a size read whole
        return FileContent(None, "", read.type)
    if read.size is not None:
        meter.declare(read.size, "file size")
    meter.add(read.length)
    if read.content is None:  # unreachable: the room only shrinks, so a cap was passed
        raise RuntimeError(f"reading {path!r} stopped at a cap that the budget does not see")
    return FileContent(read.content, read.sha256, read.type)


def _read_file(
    path: str, room: Callable[[], int], sniff: bool, wanted: Wanted | None = None
) -> _Read:
    """The worker thread's job: open, check, sniff the ends if ``wanted`` is given,
    read within ``room()``, hash (and sniff the content if not done yet)."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of
        # hanging the worker forever. Regular files ignore the flag.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    except ValueError as exc:
        # os.open's own refusals: a NUL byte, or a lone surrogate it cannot encode.
        what = (
            "it cannot be encoded for the file system (a lone surrogate?)"
            if isinstance(exc, UnicodeError)
            else "it contains a NUL byte"
        )
        shown = path.encode("utf-8", "backslashreplace").decode("utf-8")
        raise AttachmentPathError(
            f"Attachment path {shown!r} is not a valid path: {what}. {_FIX}", source=path
        ) from None
    try:
        try:
            info = os.fstat(fd)
            kind = _unreadable_kind(info.st_mode)
            if kind:
                raise AttachmentPathError(
                    f"Attachment path {path} is {kind}, not a file. {_FIX}", source=path
                )
            regular = stat.S_ISREG(info.st_mode)
            size = info.st_size if regular else None
            if size is not None and size > room():
                return _Read(size, 0, None, "", None)  # refused on its size: nothing read
            # llm types only a regular file (puremagic: "Not a regular file"): a device has none.
            content_type, typed = None, not (sniff and regular)
            if sniff and regular and wanted is not None and size and mime.sniffs_from_ends():
                head, foot = _ends(fd, size)
                content_type, typed = mime.sniff_ends(head, foot, filename=path), True
                if not wanted(content_type):
                    touched = min(size, len(head) + len(foot))
                    return _Read(size, touched, None, "", content_type, refused=True)
                wanted = None  # decided
            chunks, count = _read_within(fd, size, room)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if count > room():
        return _Read(size, count, None, "", None)  # stopped at a cap: never joined
    content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not typed:
        content_type = mime.sniff(content, filename=path)
    if sniff and wanted is not None and not wanted(content_type):
        return _Read(size, count, None, "", content_type, refused=True)  # no size: read whole
    digest = hashlib.sha256(content).hexdigest()
    return _Read(size, count, content, digest, content_type)


def _ends(fd: int, size: int) -> tuple[bytes, bytes]:
    """The bytes ``puremagic.from_file`` reads: the head, and the foot (all of a short file)."""
    head = os.pread(fd, mime.SNIFF_BYTES, 0)
    if size <= mime.FOOT_BYTES:
        return head, head
    return head, os.pread(fd, mime.FOOT_BYTES, size - mime.FOOT_BYTES)


def _read_within(fd: int, size: int | None, room: Callable[[], int]) -> tuple[list[bytes], int]:
    """Read to the end, or to one byte past ``room()``: the pieces and how many bytes.

    A regular file is read in one call that asks for one byte more than its
    size: that returns short when the file still has the size ``fstat``
    gave, the usual case, in a single buffer with no copy. A file that grew,
    shrank or has no size (``/proc`` files, devices) is read on in pieces of
    :data:`CHUNK_BYTES` until a read returns nothing.
    """
    chunks: list[bytes] = []
    count = 0
    want = size + 1 if size else CHUNK_BYTES
    while count <= (limit := room()):
        asked = min(want, limit + 1 - count)
        chunk = os.read(fd, asked)
        if not chunk:
            break
        chunks.append(chunk)
        count += len(chunk)
        if count == size and len(chunk) < asked:
            break  # exactly the size fstat gave, and then the end
        want = CHUNK_BYTES
    return chunks, count


def _unreadable(path: str, exc: OSError) -> AttachmentPathError:
    return AttachmentPathError(
        f"Attachment path {path} cannot be read: {_describe(exc)}. {_FIX}", source=path
    )


def _unreadable_kind(mode: int) -> str | None:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


def _describe(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "it does not exist"
    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc)
