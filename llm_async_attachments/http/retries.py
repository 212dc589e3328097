"""When a failed request is worth sending again, and after how long.

Only what a second try can fix is retried: a connection that could not be
made or was dropped, and 502/503/504. A server that answered with bytes that
are not HTTP would answer the same way again, and one too slow to answer once
is not helped by asking twice.
"""

from __future__ import annotations

import email.utils
import random
import time

import httpx2

__all__ = ["RETRYABLE_STATUS", "backoff", "is_transient", "retry_after"]

RETRYABLE_STATUS = frozenset({502, 503, 504})
_BACKOFF_BASE = 0.25
_BACKOFF_CAP = 4.0
# httpcore2's words for a kept-alive connection the server closed before it
# answered: the one protocol error a new connection can cure.
_DROPPED = "Server disconnected without sending a response"


def is_transient(error: Exception) -> bool:
    """Whether a request that failed with ``error`` before any response may succeed again."""
    if isinstance(error, httpx2.ConnectError | httpx2.ConnectTimeout | httpx2.ReadError):
        return True
    if isinstance(error, httpx2.WriteError):
        return True
    return isinstance(error, httpx2.RemoteProtocolError) and str(error).startswith(_DROPPED)


def backoff(attempt: int) -> float:
    """Full jitter: a random wait up to base * 2**attempt, capped."""
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))


def retry_after(response: httpx2.Response) -> float | None:
    """``Retry-After`` in seconds (whole seconds or an HTTP date); ``None`` if absent or bad.

    ``0`` means at once. Only ASCII digits count: ``str.isdigit`` also
    accepts characters such as ``²`` that ``float()`` refuses.
    """
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        return max(0.0, when.timestamp() - time.time())
    except (OverflowError, OSError, ValueError):
        return None
