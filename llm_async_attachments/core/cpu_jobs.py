"""CPU work kept off the event loop: one job at a time per loop, on a worker thread.

Hashing and base64-encoding large content would stall the loop for tens of
milliseconds. On a worker thread they stop blocking it, but a thread holding
the GIL still delays it: several at once can keep the loop waiting for the
GIL over many switch intervals. One job at a time keeps each wait to about
one interval (5 ms).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
from collections.abc import Callable
from typing import TypeVar

from ..loops import PerLoop

T = TypeVar("T")


async def _new_lock() -> asyncio.Lock:
    return asyncio.Lock()


# A lock belongs to its loop (and, once contended, refers to it): one per loop,
# freed with the loop.
_turns: PerLoop[asyncio.Lock] = PerLoop(_new_lock)


async def off_loop(work: Callable[[], T]) -> T:
    """``work()`` on a worker thread, after any other job of this loop finishes."""
    async with await _turns.get():
        return await asyncio.to_thread(work)


# Hashing or base64-encoding up to this much takes under ~4 ms on the loop, as
# llm does it; larger content is hashed and encoded on a worker thread.
ON_LOOP_LIMIT = 2 * 1024 * 1024
_BASE64_PIECE = 3 * 256 * 1024  # a multiple of 3: the pieces join into the same text


async def sha256_hex(content: bytes) -> str:
    """llm's ``id()`` of bytes, computed off the loop when they are large."""
    if len(content) <= ON_LOOP_LIMIT:
        return hashlib.sha256(content).hexdigest()
    return await off_loop(lambda: hashlib.sha256(content).hexdigest())


async def base64_text(content: bytes) -> str:
    """``base64_content()`` of bytes, computed off the loop when they are large."""
    if len(content) <= ON_LOOP_LIMIT:
        return base64.b64encode(content).decode("ascii")
    return await off_loop(lambda: _base64_in_pieces(content))


def _base64_in_pieces(content: bytes) -> str:
    # b64encode holds the GIL for its whole input: one 32 MiB call on a worker
    # thread would still stall the loop for tens of milliseconds. Pieces of
    # 768 KiB let the loop run in between.
    view, text = memoryview(content), io.BytesIO()
    for start in range(0, len(view), _BASE64_PIECE):
        text.write(base64.b64encode(view[start : start + _BASE64_PIECE]))
    return text.getvalue().decode("ascii")
