"""Connection pools: one per event loop and per network settings, freed with the loop.

A pool is a set of transports (no ``httpx2.AsyncClient``: a client would
keep a cookie jar shared by every caller, and would follow or parse
redirects in ways we must control), the slots that bound its concurrent
fetches, and the proxies the environment names. Its transports own public
``httpcore2.AsyncConnectionPool`` objects (``transport.PoolTransport``);
the one private name read here is the queue of requests of such a pool, for
:meth:`Pool.statistics` (tests and diagnostics), and a test fails loudly if
it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ssl
import threading
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpcore2
import httpx2

from ..config import Config
from ..loops import PerLoop
from .address_policy import AddressPolicy, PolicyBackend
from .anyio_tasks import forget_tasks_of_closed_loops
from .transport import PoolTransport

__all__ = [
    "NoSlot",
    "Pool",
    "PoolSettings",
    "PoolStatistics",
    "Shard",
    "UnusableProxy",
    "pool_for_running_loop",
]


@dataclass(frozen=True)
class PoolSettings:
    """The parts of a :class:`~..config.Config` that shape connections.

    Fetches whose configs agree on these share a pool; others never do, so
    that, say, a caller with ``block_private`` on never reuses a connection
    opened for one without it.
    """

    concurrency: int
    host_concurrency: int
    timeout: float
    block_private: bool
    allow: tuple[str, ...]

    @classmethod
    def of(cls, config: Config) -> PoolSettings:
        return cls(
            config.concurrency,
            config.host_concurrency,
            config.timeout,
            config.block_private,
            config.allow,
        )


@dataclass(frozen=True)
class PoolStatistics:
    """What a pool's connections are doing; ``orphaned`` must always be 0.

    An orphaned connection is busy but serves no request that is still in
    the pool's queue: nothing would ever release it.
    """

    connections: int
    idle: int
    active: int
    requests: int
    orphaned: int
    fullest_transport: int
    """Connections of the transport that holds the most (at most 16: see ``SHARD_CONNECTIONS``)."""


class NoSlot(Exception):
    """No slot came free within the wait a fetch allows (``Config.fetch_queue_timeout``)."""


class UnusableProxy(Exception):
    """A proxy named by the environment cannot be used (bad URL, missing extra)."""


SHARD_CONNECTIONS = 16
"""The most connections one httpcore2 pool holds. Its bookkeeping grows with the
square of its connections: one pool of 64 fetches five times slower than four
of 16 (measured in ``make bench``, B2)."""


@dataclass(eq=False)
class Shard:
    """One of a pool's transports, and how many fetches use it now."""

    transport: PoolTransport
    fetches: int = 0


@dataclass(eq=False)
class _HostSlots:
    slots: asyncio.Semaphore
    users: int = 0


class Pool:
    """A loop's transports for one :class:`PoolSettings`, and the slots that bound them.

    A fetch takes a slot of its host (``host_concurrency``), then one of the
    pool (``concurrency``), in that order so that waiting for a busy host
    holds nothing another host could use; then the least busy shard.
    """

    def __init__(self, settings: PoolSettings, verify: ssl.SSLContext) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._hosts: dict[str, _HostSlots] = {}
        self._verify = verify
        per_shard = min(SHARD_CONNECTIONS, settings.concurrency)
        self._limits = httpx2.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        self._timeouts = httpx2.Timeout(settings.timeout).as_dict()
        shards = -(-settings.concurrency // per_shard)
        self._shards = [Shard(self._transport()) for _ in range(shards)]
        # Proxies as llm's own fetch honours them (HTTP_PROXY, HTTPS_PROXY,
        # ALL_PROXY, NO_PROXY), read once when the pool is made. Not with the
        # address policy on: a proxy would connect, on our behalf, to
        # addresses the policy never sees.
        self._proxies = {} if settings.block_private else urllib.request.getproxies()
        self._via: dict[str, httpx2.AsyncHTTPTransport] = {}

    @asynccontextmanager
    async def slot(self, host: str, wait: float) -> AsyncIterator[Shard]:
        """A slot for one fetch from ``host``, waiting at most ``wait`` seconds for it.

        Raises :class:`NoSlot` if none came free in time; the slot is given
        back, and the shard's count lowered, when the fetch is done.
        """
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = _HostSlots(
                asyncio.Semaphore(self.settings.host_concurrency)
            )
        entry.users += 1
        try:
            give_up = asyncio.get_running_loop().time() + wait
            try:
                await _acquire(entry.slots, give_up)
                try:
                    await _acquire(self._slots, give_up)
                except BaseException:
                    entry.slots.release()
                    raise
            except TimeoutError:
                raise NoSlot from None
            try:
                shard = min(self._shards, key=lambda each: each.fetches)
                shard.fetches += 1
                try:
                    yield shard
                finally:
                    shard.fetches -= 1
            finally:
                self._slots.release()
                entry.slots.release()
        finally:
            entry.users -= 1
            if not entry.users:
                del self._hosts[host]  # no fetch holds or waits for it: hosts do not pile up

    async def send(self, request: httpx2.Request, shard: Shard) -> httpx2.Response:
        """Send ``request``; the response's body is not read yet and must be closed."""
        request.extensions["timeout"] = self._timeouts
        transport = self._proxy_transport(request.url) or shard.transport
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        for transport in self._transports():
            await transport.aclose()

    def _transports(self) -> list[httpx2.AsyncBaseTransport]:
        return [shard.transport for shard in self._shards] + list(self._via.values())

    def statistics(self) -> PoolStatistics:
        """What the connections of this pool's own transports (not proxies') are doing."""
        connections: list[httpcore2.AsyncConnectionInterface] = []
        requests: list[Any] = []
        fullest = 0
        for shard in self._shards:
            core = shard.transport.pool
            connections += core.connections
            requests += core._requests  # httpcore2's queue of AsyncPoolRequest: private
            fullest = max(fullest, len(core.connections))
        serving = {id(request.connection) for request in requests}
        busy = [c for c in connections if not (c.is_idle() or c.is_closed())]
        return PoolStatistics(
            connections=len(connections),
            idle=sum(1 for c in connections if c.is_idle()),
            active=len(busy),
            requests=len(requests),
            orphaned=sum(1 for c in busy if id(c) not in serving),
            fullest_transport=fullest,
        )

    def proxied(self, url: httpx2.URL) -> bool:
        """Whether a request to ``url`` goes through a proxy the environment names."""
        return self._proxy_for(url) is not None

    def _proxy_transport(self, url: httpx2.URL) -> httpx2.AsyncHTTPTransport | None:
        proxy = self._proxy_for(url)
        if proxy is None:
            return None
        transport = self._via.get(proxy)
        if transport is None:
            try:
                transport = self._via[proxy] = httpx2.AsyncHTTPTransport(
                    verify=self._verify,
                    limits=self._limits,
                    trust_env=False,
                    proxy=httpx2.Proxy(proxy),
                )
            except (ValueError, ImportError, httpx2.InvalidURL) as error:
                raise UnusableProxy(f"the proxy {proxy} cannot be used: {error}") from None
        return transport

    def _proxy_for(self, url: httpx2.URL) -> str | None:
        proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
        if not proxy or urllib.request.proxy_bypass(url.host):
            return None
        return proxy if "://" in proxy else f"http://{proxy}"

    def _transport(self) -> PoolTransport:
        """A shard: a connection pool of its own, connecting only where the address
        policy allows when ``block_private`` is on."""
        limits = self._limits
        backend = None
        if self.settings.block_private:
            backend = PolicyBackend(AddressPolicy.from_allow(self.settings.allow))
        return PoolTransport(
            httpcore2.AsyncConnectionPool(
                ssl_context=self._verify,
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
                network_backend=backend,
            )
        )


async def _acquire(semaphore: asyncio.Semaphore, give_up: float) -> None:
    """Acquire ``semaphore`` by loop time ``give_up``, or raise ``TimeoutError``."""
    if not semaphore.locked():
        await semaphore.acquire()  # free now: no timer to set up
        return
    async with asyncio.timeout_at(give_up):
        await semaphore.acquire()


async def _no_pools() -> dict[PoolSettings, Pool]:
    return {}


async def _close_pools(pools: dict[PoolSettings, Pool]) -> None:
    for pool in pools.values():
        await pool.aclose()


_per_loop: PerLoop[dict[PoolSettings, Pool]] = PerLoop(
    _no_pools, _close_pools, abandoned=forget_tasks_of_closed_loops
)


async def pool_for_running_loop(config: Config) -> Pool:
    """The running loop's pool for ``config``'s network settings, made on first use."""
    settings = PoolSettings.of(config)
    pools = await _per_loop.get()
    pool = pools.get(settings)
    if pool is None:
        verify = await _ssl_context()
        pool = pools.setdefault(settings, Pool(settings, verify))
    return pool


def running_pools() -> list[Pool]:
    """The running loop's pools (for tests and diagnostics)."""
    pools = _per_loop.running_value()
    return list(pools.values()) if pools else []


def loops_with_pools() -> int:
    """How many event loops hold pools now (for tests and diagnostics)."""
    return _per_loop.loops()


async def _ssl_context() -> ssl.SSLContext:
    """httpx2's default TLS settings, built once per process on a worker thread.

    Loading the CA bundle takes 30-50 ms; done on the event loop, as
    ``httpx2.AsyncClient()`` would, it would stall it for every new loop.
    """
    if _ssl is not None:
        return _ssl
    return await asyncio.to_thread(_first_use)


def _first_use() -> ssl.SSLContext:
    global _ssl
    with _ssl_lock:
        if _ssl is None:
            _ssl = httpx2.create_ssl_context()
        return _ssl


_ssl: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()

# httpx2 imports these on its first connection, on the event loop (~40 ms).
# Imported with this module instead: on the worker thread that imports the HTTP
# layer for the first fetch (see store.shared_responses._http), where the loop goes on meanwhile.
for _module in ("h11", "anyio._backends._asyncio", "httpcore2._backends.anyio"):
    with contextlib.suppress(ImportError):
        importlib.import_module(_module)
