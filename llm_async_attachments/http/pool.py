"""Connection pools: one per event loop and per network settings, freed with the loop.

A pool is a set of httpx transports (no ``httpx.AsyncClient``: a client
would keep a cookie jar shared by every caller, and would follow or parse
redirects in ways we must control), the slots that bound its concurrent
fetches, and the proxies the environment names. This module is the one
place that touches httpx's and httpcore's internals (tested with httpx
0.27-0.28 and httpcore 1.0).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ssl
import threading
import urllib.request
from dataclasses import dataclass

import httpcore
import httpx

from ..config import Config
from ..loops import PerLoop
from ..policy import AddressPolicy, PolicyBackend

__all__ = ["Pool", "PoolSettings", "PoolStatistics", "UnusableProxy", "pool_for_running_loop"]


@dataclass(frozen=True)
class PoolSettings:
    """The parts of a :class:`~..config.Config` that shape connections.

    Fetches whose configs agree on these share a pool; others never do, so
    that, say, a caller with ``block_private`` on never reuses a connection
    opened for one without it.
    """

    concurrency: int
    timeout: float
    block_private: bool
    allow: tuple[str, ...]

    @classmethod
    def of(cls, config: Config) -> PoolSettings:
        return cls(config.concurrency, config.timeout, config.block_private, config.allow)


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


class UnusableProxy(Exception):
    """A proxy named by the environment cannot be used (bad URL, missing extra)."""


class Pool:
    """A loop's transports for one :class:`PoolSettings`, and the slots that bound them."""

    def __init__(self, settings: PoolSettings, verify: ssl.SSLContext) -> None:
        self.settings = settings
        self.slots = asyncio.Semaphore(settings.concurrency)
        self._verify = verify
        self._limits = httpx.Limits(
            max_connections=settings.concurrency,
            max_keepalive_connections=settings.concurrency,
        )
        self._timeouts = httpx.Timeout(settings.timeout).as_dict()
        self._direct = self._transport()
        # Proxies as llm's own fetch honours them (HTTP_PROXY, HTTPS_PROXY,
        # ALL_PROXY, NO_PROXY), read once when the pool is made. Not with the
        # address policy on: a proxy would connect, on our behalf, to
        # addresses the policy never sees.
        self._proxies = {} if settings.block_private else urllib.request.getproxies()
        self._via: dict[str, httpx.AsyncHTTPTransport] = {}

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the response's body is not read yet and must be closed."""
        request.extensions["timeout"] = self._timeouts
        return await self._transport_for(request.url).handle_async_request(request)

    async def aclose(self) -> None:
        for transport in (self._direct, *self._via.values()):
            await transport.aclose()

    def statistics(self) -> PoolStatistics:
        connections, requests = [], []
        for transport in (self._direct, *self._via.values()):
            core = transport._pool
            connections += core.connections
            requests += getattr(core, "_requests", [])
        serving = {id(request.connection) for request in requests}
        idle = sum(1 for c in connections if c.is_idle())
        busy = [c for c in connections if not (c.is_idle() or c.is_closed())]
        return PoolStatistics(
            connections=len(connections),
            idle=idle,
            active=len(busy),
            requests=len(requests),
            orphaned=sum(1 for c in busy if id(c) not in serving),
        )

    def _transport_for(self, url: httpx.URL) -> httpx.AsyncHTTPTransport:
        proxy = self._proxy_for(url)
        if proxy is None:
            return self._direct
        transport = self._via.get(proxy)
        if transport is None:
            try:
                transport = self._via[proxy] = self._transport(httpx.Proxy(proxy))
            except (ValueError, ImportError, httpx.InvalidURL) as error:
                raise UnusableProxy(f"the proxy {proxy} cannot be used: {error}") from None
        return transport

    def _proxy_for(self, url: httpx.URL) -> str | None:
        proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
        if not proxy or urllib.request.proxy_bypass(url.host):
            return None
        return proxy if "://" in proxy else f"http://{proxy}"

    def _transport(self, proxy: httpx.Proxy | None = None) -> httpx.AsyncHTTPTransport:
        transport = httpx.AsyncHTTPTransport(
            verify=self._verify, limits=self._limits, trust_env=False, proxy=proxy
        )
        if self.settings.block_private:
            # httpx has no public way to pass a network backend; its pool is
            # rebuilt with the same settings and a backend that checks every
            # address it connects to.
            transport._pool = httpcore.AsyncConnectionPool(
                ssl_context=self._verify,
                max_connections=self._limits.max_connections,
                max_keepalive_connections=self._limits.max_keepalive_connections,
                keepalive_expiry=self._limits.keepalive_expiry,
                network_backend=PolicyBackend(AddressPolicy.from_allow(self.settings.allow)),
            )
        return transport


async def _no_pools() -> dict[PoolSettings, Pool]:
    return {}


async def _close_pools(pools: dict[PoolSettings, Pool]) -> None:
    for pool in pools.values():
        await pool.aclose()


_per_loop: PerLoop[dict[PoolSettings, Pool]] = PerLoop(_no_pools, _close_pools)


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
    """httpx's default TLS settings, built once per process on a worker thread.

    Loading the CA bundle takes 30-50 ms; done on the event loop, as
    ``httpx.AsyncClient()`` would, it would stall it for every new loop.
    """
    return _ssl or await asyncio.to_thread(_first_use)


def _first_use() -> ssl.SSLContext:
    global _ssl
    with _ssl_lock:
        if _ssl is None:
            _ssl = httpx.create_ssl_context()
        return _ssl


_ssl: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()

# httpx imports these on its first connection, on the event loop (~40 ms).
# Imported with this module instead: on the worker thread that imports the HTTP
# layer for the first fetch (see prepare._http), where the loop goes on meanwhile.
for _module in ("h11", "anyio._backends._asyncio", "httpcore._backends.anyio"):
    with contextlib.suppress(ImportError):
        importlib.import_module(_module)
