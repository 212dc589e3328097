"""Reading local files without blocking the event loop, under the byte caps."""

from __future__ import annotations

import io
import os
import stat

import aiofiles
import aiofiles.os

from .budget import Meter
from .errors import AttachmentPathError

CHUNK_BYTES = 1024 * 1024

_FIX = "Check the path, or pass the bytes with content= instead."


def _open_nonblocking(path: str, flags: int) -> int:
    # O_NONBLOCK: opening a FIFO with no writer returns at once instead of
    # hanging a worker thread forever. Regular files ignore the flag.
    return os.open(path, flags | os.O_NONBLOCK)


async def read_path(path: str, meter: Meter) -> bytes:
    """All bytes of ``path``, refusing early when its size passes a cap.

    The size from ``stat`` is checked first, but never trusted: reading stops
    as soon as the bytes read pass the cap, so a file that grows while read, or
    a device such as ``/dev/zero``, cannot exhaust memory. Directories, FIFOs
    and sockets are refused with :class:`AttachmentPathError`.
    """
    try:
        async with aiofiles.open(path, "rb", opener=_open_nonblocking) as file:
            info = await aiofiles.os.stat(file.fileno())
            kind = _unreadable_kind(info.st_mode)
            if kind:
                raise AttachmentPathError(
                    f"Attachment path {path} is {kind}, not a file. {_FIX}", source=path
                )
            if stat.S_ISREG(info.st_mode):
                meter.declare(info.st_size, "file size")
            content = io.BytesIO()  # getvalue() hands over its buffer: no final copy
            while chunk := await file.read(min(CHUNK_BYTES, meter.room + 1)):
                meter.add(len(chunk))
                content.write(chunk)
            return content.getvalue()
    except OSError as exc:
        raise AttachmentPathError(
            f"Attachment path {path} cannot be read: {_describe(exc)}. {_FIX}",
            source=path,
        ) from exc
    except (ValueError, UnicodeError) as exc:
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
