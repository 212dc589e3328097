"""The fleet tier: records and claims in Redis (or Valkey), shared by every machine that
points at the same server.

``shared_cache_url`` names the server: ``redis://[:password@]host:port/db``,
``rediss://`` for TLS, or ``unix:///path/to/socket?db=N``. It needs the ``redis`` extra
(``pip install 'llm-async-attachments[redis]'``); this module is imported only when a
URL is set.

Keys are :data:`PREFIX` and the SHA-256 of the tier's key (keys are long URLs). A record
is one hash (``version``, ``meta``, ``body``) that expires with the record; ``:claim``
after the name holds a claim's token, ``:skip`` marks a key as not worth waiting for.
Each write and each compare-and-set is one Lua script, which no other command interleaves
with: another process sees a record whole or not at all, and a ``304`` never refreshes a
record that changed since.

Each event loop has its own client, closed with the loop (``loops.PerLoop``), of at most
:data:`CONNECTIONS` connections. Every call is bounded: half a second to connect and for
each read, :data:`BOUND` seconds in all. A server that cannot be reached or does not
answer in time is not asked again for :data:`PAUSE` seconds, so while it is down each
prepare waits for it once. Nothing raises but cancellation: a failure answers as if
nothing were kept, with a ``SharedCacheWarning`` per kind of failure that never shows
the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..errors import SharedCacheWarning, redact
from ..loops import PerLoop
from .tier import NOT_WORTH_WAITING, Claim, Record, Warner, key_digest

__all__ = ["BOUND", "CONNECTIONS", "NOT_WORTH_WAITING", "PAUSE", "PREFIX", "FleetTier"]

T = TypeVar("T")

PREFIX = "llm-async-attachments:1:"
"""Starts every key this tier writes; the number changes if the layout does."""
PAUSE = 5.0
"""Seconds the server is not asked after it failed as a whole (it could not be reached,
did not answer in time, refused the password, spoke another protocol); not after it
refused one command (out of memory, say)."""
BOUND = 2.0
"""Seconds one call may take in all, from taking a connection to the answer."""
CONNECTIONS = 16
"""Connections per event loop; further calls wait for one (not counted in BOUND)."""
_SOCKET_TIMEOUT = 0.5  # seconds to connect, and for each read or write

# Each script returns 1 when it did its work. KEYS: the record, the claim, the mark
# (_PUT, _FIND_OR_CLAIM); the record (_REFRESH, _REMOVE); the claim, the mark (_RELEASE).
# A script that has written once runs to its end even when the server is out of memory:
# HSET comes first, so that such a server refuses a put before it changes anything.
_PUT = """
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'meta', ARGV[2], 'body', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('DEL', KEYS[2], KEYS[3])
return 1
"""
_REFRESH = """
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'meta', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
_REMOVE = """
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""
# The record's fields; else 1: claimed; 2: another holds it; 0: marked as not worth
# waiting for. KEYS: the record, the claim, the mark.
_FIND_OR_CLAIM = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields > 0 then return fields end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 2
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if ARGV[2] == '1' then redis.call('SET', KEYS[2], '1', 'PX', ARGV[3]) end
return 1
"""


class FleetTier:
    """Records and claims in the Redis server at ``url`` (see the module docstring).

    Raises ``ValueError`` if ``url`` is not a Redis URL; never connects before a call.
    """

    name = "fleet"

    def __init__(self, url: str) -> None:
        self._shown = redact(url)  # no password, in the user part or the query
        try:
            self._password = parse_url(url).get("password")
        except ValueError:
            raise ValueError(
                f"{self._shown} is not a Redis URL (redis://, rediss:// or unix://)"
            ) from None
        self._url = url
        self._warner = Warner(SharedCacheWarning, f"shared cache at {self._shown}")
        self._links: PerLoop[_Link] = PerLoop(self._open, _close)
        self._paused_until = 0.0

    def __repr__(self) -> str:
        return f"FleetTier({self._shown!r})"

    async def get(self, key: str) -> Record | None:
        record = _names(key)[0]

        async def read(client: Redis) -> Record | None:
            fields = await client.hgetall(record)
            return _record(record, fields) if fields else None

        return await self._run(read, None)

    async def find_or_claim(self, key: str, seconds: float) -> Record | Claim | None:
        record, claim, mark = _names(key)
        token = uuid.uuid4().hex

        async def run(client: Redis) -> Record | Claim:
            found = await client.register_script(_FIND_OR_CLAIM)(
                [record, claim, mark], [token, _ms(seconds)]
            )
            if isinstance(found, list):
                return _record(record, dict(zip(found[::2], found[1::2], strict=True)))
            return Claim(token, False) if found == 1 else Claim(None, found == 2)

        return await self._run(run, None)

    async def put(self, key: str, body: bytes, meta: bytes, keep_for: float) -> str | None:
        version = uuid.uuid4().hex
        done = await self._eval(_PUT, list(_names(key)), [version, meta, body, _ms(keep_for)])
        return version if done == 1 else None

    async def refresh(self, key: str, version: str, meta: bytes, keep_for: float) -> bool:
        record = _names(key)[0]
        return await self._eval(_REFRESH, [record], [version, meta, _ms(keep_for)]) == 1

    async def remove(self, key: str, version: str) -> None:
        await self._eval(_REMOVE, [_names(key)[0]], [version])

    async def release(self, key: str, token: str, *, mark: bool) -> None:
        _, claim, skip = _names(key)
        await self._eval(_RELEASE, [claim, skip], [token, int(mark), _ms(NOT_WORTH_WAITING)])

    async def _eval(self, script: str, keys: list[str], args: list[Any]) -> int | None:
        """What ``script`` returned, or ``None`` if it could not run (and was warned of)."""

        async def run(client: Redis) -> int | None:
            return int(await client.register_script(script)(keys, args))

        return await self._run(run, None)

    async def _run(self, call: Callable[[Redis], Awaitable[T]], nothing: T) -> T:
        """``call``'s answer within :data:`BOUND`; ``nothing`` if paused or it failed."""
        link = await self._links.get()
        async with link.slots:
            if time.monotonic() < self._paused_until:
                return nothing
            try:
                async with asyncio.timeout(BOUND):
                    return await call(link.client)
            except Exception as exc:  # a cache never fails its caller; cancellation does
                self._failed(exc)
                return nothing

    def _failed(self, exc: Exception) -> None:
        if not isinstance(exc, redis_errors.ResponseError | _Malformed):
            self._paused_until = time.monotonic() + PAUSE
        kind, advice = _diagnosis(exc)
        problem = str(exc).rstrip(".") or f"no answer within {BOUND:g} s"
        if self._password:
            problem = problem.replace(self._password, "***")
        self._warner.warn(kind, problem, advice)

    async def _open(self) -> _Link:
        pool = ConnectionPool.from_url(
            self._url,
            max_connections=CONNECTIONS,
            socket_connect_timeout=_SOCKET_TIMEOUT,
            socket_timeout=_SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # a cache asks once; newer clients retry by default
        )
        return _Link(Redis(connection_pool=pool), asyncio.Semaphore(CONNECTIONS))


class _Link(NamedTuple):
    """One event loop's client, and the slots that keep it within its connections."""

    client: Redis
    slots: asyncio.Semaphore


class _Malformed(Exception):
    """A key under the prefix holds what this tier did not write."""


async def _close(link: _Link) -> None:
    with contextlib.suppress(redis_errors.RedisError, OSError):
        await link.client.aclose(close_connection_pool=True)


def _record(name: str, fields: dict[Any, Any]) -> Record:
    """The record in a hash's fields; ``_Malformed`` if they are not one."""
    version, meta, body = (fields.get(field) for field in (b"version", b"meta", b"body"))
    if (
        isinstance(version, bytes)
        and version.isascii()
        and isinstance(meta, bytes)
        and isinstance(body, bytes)
    ):
        return Record(body, meta, version.decode())
    raise _Malformed(f"{name} does not hold a record")


def _names(key: str) -> tuple[str, str, str]:
    """The keys of ``key``'s record, claim and mark."""
    name = PREFIX + key_digest(key)
    return name, name + ":claim", name + ":skip"


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _diagnosis(exc: Exception) -> tuple[str, str]:
    """What failed (a Warner kind), and what to check."""
    paused = f"It is not asked again for {PAUSE:g} s after such a failure."
    if isinstance(exc, redis_errors.AuthenticationError | redis_errors.AuthorizationError):
        return "log in", f"Check the user and password in the URL. {paused}"
    if isinstance(exc, redis_errors.TimeoutError | TimeoutError):
        return "get an answer in time", f"Check that the server is up and not overloaded. {paused}"
    if isinstance(exc, redis_errors.ConnectionError | OSError):
        return "connect", f"Check that the server runs at that address. {paused}"
    if isinstance(exc, redis_errors.OutOfMemoryError):
        return "store a record", (
            "The server is out of memory: raise its maxmemory, or set an eviction "
            "policy such as allkeys-lru."
        )
    if isinstance(exc, _Malformed):
        return "read a record", f"Another program may be writing keys under {PREFIX!r}."
    if isinstance(exc, redis_errors.ResponseError):
        return "use the server", "Check that it is Redis 4 or later, or Valkey, and writable."
    return "talk to the server", f"Check that the URL names a Redis or Valkey server. {paused}"
