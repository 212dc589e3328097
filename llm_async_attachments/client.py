"""One pooled ``httpx.AsyncClient`` per event loop, closed when the loop shuts down."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ssl
import threading
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpcore
import httpx

from .config import Config
from .policy import AddressPolicy, PolicyBackend

_HEADERS = {"Accept-Encoding": "gzip, deflate", "User-Agent": "llm-async-attachments"}


@dataclass
class Pool:
    """A loop's client for one set of settings, and the slots that bound its fetches."""

    client: httpx.AsyncClient
    slots: asyncio.Semaphore
    closer: AsyncIterator[None]


@dataclass
class _LoopPools:
    making: asyncio.Lock
    pools: dict[tuple[object, ...], Pool]


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPools] = (
    weakref.WeakKeyDictionary()
)


def _settings(config: Config) -> tuple[object, ...]:
    return (config.concurrency, config.timeout, config.block_private, config.allow)


async def pool_for_running_loop(config: Config) -> Pool:
    """The connection pool of the running loop for these settings, made on first use.

    An httpx client is bound to the loop its connections were made on and must
    never be used from another. When many fetches start at once, one makes
    the pool and the others wait for it.
    """
    loop = asyncio.get_running_loop()
    registry = _pools.get(loop)
    if registry is None:
        registry = _pools[loop] = _LoopPools(asyncio.Lock(), {})
    key = _settings(config)
    if key not in registry.pools:
        async with registry.making:
            if key not in registry.pools:
                client = httpx.AsyncClient(
                    transport=_transport(config, await _ssl_context()),
                    headers=_HEADERS,
                    timeout=httpx.Timeout(config.timeout),
                )
                closer = _close_at_loop_shutdown(client)
                await anext(closer)
                slots = asyncio.Semaphore(config.concurrency)
                registry.pools[key] = Pool(client, slots, closer)
    return registry.pools[key]


async def reclaim_orphans(pool: Pool) -> None:
    """Close connections httpcore lost track of when a fetch was cancelled.

    httpcore 1.0.9 can leave a connection busy after a cancellation, owned by
    no request (encode/httpcore#1093, encode/httpx#3782): it would hold one of
    the pool's slots for the life of the loop, and after ``concurrency`` of
    them every fetch would wait for a slot forever. Run before each fetch, this
    looks at a handful of connections and closes the orphans. A no-op if
    httpcore's internals ever change shape.
    """
    core = getattr(pool.client._transport, "_pool", None)
    requests = getattr(core, "_requests", None)
    connections = getattr(core, "_connections", None)
    if not isinstance(requests, list) or not isinstance(connections, list):
        return
    owned = {id(request.connection) for request in requests}
    orphans = [
        connection
        for connection in connections
        if id(connection) not in owned and not (connection.is_idle() or connection.is_closed())
    ]
    for connection in orphans:
        connections.remove(connection)
    for connection in orphans:
        await connection.aclose()


def _transport(config: Config, verify: ssl.SSLContext) -> httpx.AsyncHTTPTransport:
    limits = httpx.Limits(
        max_connections=config.concurrency, max_keepalive_connections=config.concurrency
    )
    if not config.block_private:
        return httpx.AsyncHTTPTransport(verify=verify, limits=limits)
    # Proxies are ignored (trust_env=False): a proxy would connect on our behalf,
    # to addresses the policy never sees.
    transport = httpx.AsyncHTTPTransport(verify=verify, limits=limits, trust_env=False)
    # httpx has no public way to pass a network backend; its pool is rebuilt
    # with the same settings and a backend that checks every address.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=verify,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=PolicyBackend(AddressPolicy.from_allow(config.allow)),
    )
    return transport


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

# httpx imports these on its first connection, on the event loop (~40 ms; on a
# worker thread they would still hold the GIL). Importing them with this
# package moves that to when llm loads its plugins.
for _module in ("h11", "anyio._backends._asyncio", "httpcore._backends.anyio"):
    with contextlib.suppress(ImportError):
        importlib.import_module(_module)


async def _close_at_loop_shutdown(client: httpx.AsyncClient) -> AsyncIterator[None]:
    # A suspended async generator: the loop's shutdown_asyncgens(), which
    # asyncio.run() and asyncio.Runner call before closing the loop, resumes
    # it so the client closes its connections on the loop that made them.
    try:
        yield
    finally:
        await client.aclose()
