"""URL content shared by every attachment with that URL, under HTTP's caching rules.

Separate ``llm.Attachment`` objects with the same URL share one fetch while
its response is fresh (``max-age``, ``Expires``); a stale or ``no-cache``
response is revalidated with ``If-None-Match`` / ``If-Modified-Since``, and a
``304`` costs no body; a ``no-store`` response is never kept, in memory or
on disk. The rules are RFC 9111's, as hishel decides them (see
``http.caching``). Entries are kept per address policy: content fetched with
``block_private`` off, or with more hosts allowed, never answers a caller
with a stricter policy. URLs with credentials (``https://user:pw@...``) are
never shared.

Bodies are held in memory under the process's budget (``memory``); a body
that leaves memory is written to the disk tier (``disk``), and read back from
there, off the event loop, the next time it is needed: bytes that cost no
download, which do not count against ``max_total_bytes``.

This module also imports the HTTP layer the first time it is needed (see
:func:`_http`). It knows nothing of llm.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

from . import memory
from .config import Config
from .disk import DiskTier
from .errors import AttachmentError, AttachmentsTotalTooLarge
from .state import FetchKey

if TYPE_CHECKING:
    from .budget import Meter
    from .http.caching import Stored

__all__ = ["Got", "content", "fetch_type"]

_ENTRIES = 65536  # URLs remembered (their headers; bodies are under the memory budget)


class Got(NamedTuple):
    """What asking for a URL's content found."""

    type: str | None
    blob: memory.Blob | None
    """The body, held by the caller's lease; ``None`` when it was not wanted."""
    requests: int
    downloaded: int
    """Bytes downloaded for it (0 when the body came from memory or disk)."""


@dataclass
class _Entry:
    stored: Stored
    blob: memory.Blob  # its data is None once it left memory
    disk_key: str
    on_disk: bool
    """Written to the disk tier when fetched: when it leaves memory, it is there."""
    fresh_until: float = 0.0
    """``time.time()`` until which the response is fresh, as hishel computed once."""

    def fresh(self) -> bool:
        return time.time() < self.fresh_until


def _freshness(rules: ModuleType, url: str, stored: Stored) -> float:
    assert _http_layer is not None  # imported before any response is kept
    return time.time() + float(rules.fresh_for(url, _http_layer.REQUEST_HEADERS, stored))


_Key = tuple[str, bool, frozenset[str]]
_entries: OrderedDict[_Key, _Entry] = OrderedDict()
_entries_lock = threading.Lock()
_flights: dict[
    tuple[asyncio.AbstractEventLoop, str, FetchKey], asyncio.Future[AttachmentError | None]
] = {}


async def content(
    url: str,
    meter: Meter,
    config: Config,
    settings: FetchKey,
    wanted: Callable[[str | None], bool],
    lease: memory.Lease,
) -> Got:
    """The type of ``url`` and, if ``wanted(type)``, its body, from the cache if it may.

    ``settings`` is ``fetch_key(config)``, which the caller has at hand.
    """
    if _has_credentials(url):
        return await _download(url, meter, config, wanted, lease, None)
    key: _Key = (url, settings.block_private, settings.allow)
    flight = (asyncio.get_running_loop(), url, settings)
    # One fetch at a time per URL and settings on a loop: the others then find it cached.
    # A failure is shared with those waiting, as a copy each (the owner's own total
    # budget excepted): a hundred attachments of one dead URL wait once, not in turn.
    while (running := _flights.get(flight)) is not None:
        failure = await asyncio.shield(running)
        if failure is not None:
            raise failure.copy()
    future: asyncio.Future[AttachmentError | None] = asyncio.get_running_loop().create_future()
    _flights[flight] = future
    failure = None
    try:
        tier = _tier(config)
        if tier is not None and not tier.scanned:
            await _scan(tier)
        if key not in _entries and (tier is None or not tier.may_have(_disk_key(key))):
            # Nothing kept (the usual case): straight to the download, one frame fewer
            # for each of thousands of fetches that may be waiting for a slot.
            return await _download(url, meter, config, wanted, lease, key)
        return await _cached(url, key, meter, config, wanted, lease, tier)
    except AttachmentsTotalTooLarge:
        raise
    except AttachmentError as error:
        failure = error
        raise
    finally:
        del _flights[flight]
        future.set_result(failure)


async def _cached(
    url: str,
    key: _Key,
    meter: Meter,
    config: Config,
    wanted: Callable[[str | None], bool],
    lease: memory.Lease,
    tier: DiskTier | None,
) -> Got:
    """:func:`content` once something may be kept for ``key`` (``tier``: the config's)."""
    http = _http_layer or await _http()
    entry = _entries.get(key)
    if entry is None and tier is not None:
        entry = await _from_disk(tier, key, config)
    if entry is None:
        return await _download(url, meter, config, wanted, lease, key)
    rules = await _rules()  # an entry exists: they were imported to keep it
    if entry.fresh():  # hishel said so, and it only wanes with time
        decision = rules.Fresh(entry.stored)
    else:
        decision = rules.lookup(url, http.REQUEST_HEADERS, entry.stored)
    if isinstance(decision, rules.Miss):
        return await _download(url, meter, config, wanted, lease, key)
    content_type = entry.stored.content_type
    if not wanted(content_type):
        if isinstance(decision, rules.Fresh):
            return Got(content_type, None, 0, 0)
        return await _download(url, meter, config, wanted, lease, key)
    blob = await _body(entry, tier, lease, config)
    if blob is None:  # gone from memory and disk: fetch it whole
        _forget(key)
        return await _download(url, meter, config, wanted, lease, key)
    if isinstance(decision, rules.Fresh):
        return Got(content_type, blob, 0, 0)
    fetched = await http.fetch_content(url, meter, config, wanted, decision.headers)
    if fetched.status == 304:
        refreshed = rules.refreshed(entry.stored, fetched.status, fetched.headers)
        if refreshed is not None:
            entry.stored = refreshed
            entry.fresh_until = _freshness(rules, url, refreshed)
            if entry.on_disk and tier is not None:  # the copy on disk carries them too
                entry.on_disk = await tier.put(
                    entry.disk_key, blob_bytes(blob), refreshed.to_bytes()
                )
            _remember(key, entry)
            return Got(content_type, blob, fetched.requests, 0)
        _forget(key)
        return await _download(url, meter, config, wanted, lease, key)
    return await _keep(url, key, fetched, config, lease, tier)


async def _download(
    url: str,
    meter: Meter,
    config: Config,
    wanted: Callable[[str | None], bool],
    lease: memory.Lease,
    key: _Key | None,
) -> Got:
    http = _http_layer or await _http()
    fetched = await http.fetch_content(url, meter, config, wanted)
    if key is None or fetched.content is None:
        blob = None
        if fetched.content is not None:
            blob = _admit(fetched.content, config, lease, keep=True)
        return Got(fetched.type, blob, fetched.requests, len(fetched.content or b""))
    return await _keep(url, key, fetched, config, lease, _tier(config))


async def _keep(
    url: str,
    key: _Key,
    fetched: Any,
    config: Config,
    lease: memory.Lease,
    tier: DiskTier | None,
) -> Got:
    """A new response: kept and shared if HTTP's rules allow and it can ever be reused."""
    body: bytes | None = fetched.content
    downloaded = len(body or b"")
    if body is None:
        return Got(fetched.type, None, fetched.requests, 0)
    rules = await _rules() if _may_be_kept(fetched.headers) else None
    stored = None
    if rules is not None:
        stored = rules.to_store(
            url, dict(fetched.request_headers), fetched.status, fetched.headers, fetched.type
        )
    if rules is None or stored is None:
        # Not shared: kept for this attachment only, or (no-store) only while this
        # prepare and the execute after it need it.
        _forget(key)
        keep = rules is None or not rules.no_store(fetched.headers)
        blob = _admit(body, config, lease, keep=keep)
        return Got(fetched.type, blob, fetched.requests, downloaded)
    disk_key = _disk_key(key)
    blob = _admit(body, config, lease, keep=True)
    # Written now, while it is in hand: it may leave memory at the end of any lease.
    on_disk = tier is not None and await tier.put(disk_key, body, stored.to_bytes())
    entry = _Entry(stored, blob, disk_key, on_disk, _freshness(rules, url, stored))
    _remember(key, entry)
    return Got(fetched.type, blob, fetched.requests, downloaded)


async def _body(
    entry: _Entry, tier: DiskTier | None, lease: memory.Lease, config: Config
) -> memory.Blob | None:
    """The entry's body held by ``lease``: from memory, else read back from disk."""
    blob = entry.blob
    if memory.hold(blob, lease):
        return blob
    if tier is None:
        return None
    found = await tier.get(entry.disk_key) if entry.on_disk else None
    if found is None:
        return None
    entry.blob = _admit(found[0], config, lease, keep=True)
    return entry.blob


def _admit(body: bytes, config: Config, lease: memory.Lease, *, keep: bool) -> memory.Blob:
    return memory.admit(body, keep=keep, budget=config.cache_bytes, lease=lease)


def _remember(key: _Key, entry: _Entry) -> None:
    with _entries_lock:
        _entries[key] = entry
        _entries.move_to_end(key)
        while len(_entries) > _ENTRIES:
            _entries.popitem(last=False)


def blob_bytes(blob: memory.Blob) -> bytes:
    data = blob.data
    assert isinstance(data, bytes)  # held by a lease
    return data


def _forget(key: _Key) -> None:
    with _entries_lock:
        _entries.pop(key, None)


async def _from_disk(tier: DiskTier, key: _Key, config: Config) -> _Entry | None:
    """An entry another process, or this one before, left on disk."""
    disk_key = _disk_key(key)
    if not tier.may_have(disk_key):
        return None
    found = await tier.get(disk_key)
    if found is None:
        return None
    rules = await _rules()
    try:
        stored = rules.Stored.from_bytes(found[1])
    except ValueError:
        await tier.remove(disk_key)
        return None
    # Under the budget like any other body (whoever asked holds it next, if it wants it).
    blob = memory.admit(found[0], keep=True, budget=config.cache_bytes, lease=None)
    entry = _Entry(stored, blob, disk_key, True, _freshness(rules, key[0], stored))
    _remember(key, entry)
    return entry


_scans: dict[tuple[asyncio.AbstractEventLoop, int], asyncio.Future[None]] = {}


async def _scan(tier: DiskTier) -> None:
    """The tier's first scan, once per loop however many fetches ask at once."""
    slot = (asyncio.get_running_loop(), id(tier))
    scanning = _scans.get(slot)
    if scanning is None:
        scanning = _scans[slot] = asyncio.ensure_future(tier.scan())
        scanning.add_done_callback(lambda done: _scans.pop(slot, None))
    await asyncio.shield(scanning)


def _disk_key(key: _Key) -> str:
    url, block_private, allow = key
    return "\n".join([url, "private-blocked" if block_private else "open", *sorted(allow)])


def _has_credentials(url: str) -> bool:
    authority = url.partition("://")[2].split("/", 1)[0]
    return "@" in authority


_tiers: dict[tuple[str, int], DiskTier] = {}


def _tier(config: Config) -> DiskTier | None:
    """The disk tier of ``config``'s directory and size, or ``None`` when it is off."""
    if not config.disk_cache_bytes:
        return None
    directory = config.disk_cache_dir or _default_directory()
    slot = (directory, config.disk_cache_bytes)
    tier = _tiers.get(slot)
    if tier is None:
        tier = _tiers.setdefault(slot, DiskTier(Path(directory), config.disk_cache_bytes))
    return tier


def _default_directory() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "llm-async-attachments")


def read_back(url: str, config: Config) -> bytes | None:
    """The body kept for ``url`` under ``config``'s policy, from memory or, blocking,
    from disk; ``None`` if none is kept. For sync reads that prepare did not foresee."""
    entry = _entries.get((url, config.block_private, frozenset(config.allow)))
    if entry is None:
        return None
    data = entry.blob.read()
    if isinstance(data, bytes):
        return data
    tier = _tier(config)
    found = tier.get_blocking(entry.disk_key) if tier is not None and entry.on_disk else None
    return found[0] if found is not None else None


async def fetch_type(url: str, config: Config) -> tuple[str | None, int]:
    """The type of ``url``: from a fresh cached response, else by ``HEAD`` (see the HTTP layer)."""
    entry = _entries.get((url, config.block_private, frozenset(config.allow)))
    if entry is not None and entry.fresh():
        return entry.stored.content_type, 0
    http = _http_layer or await _http()
    fetched = await http.fetch_type(url, config)
    return fetched.type, fetched.requests


# The HTTP layer imports httpx, httpcore, h11 and anyio's asyncio backend: tens of
# milliseconds that every llm command would pay if the llm plugin imported it. It
# is imported when a URL is first fetched instead, on a worker thread that this
# awaits, so that the event loop goes on meanwhile. An importing thread holds the
# GIL until another thread has waited for it for the switch interval (5 ms by
# default), and the loop's thread would wait that long on every tick: the
# interval is 1 ms while the import runs (once per process). The caching rules
# (hishel, which loads sqlite3 and msgpack: tens of milliseconds more) are
# imported the same way, later: when a response first carries caching headers.
_http_layer: ModuleType | None = None
_rules_module: ModuleType | None = None
_import_lock = threading.Lock()
_IMPORT_SWITCH_INTERVAL = 0.001
_CACHING_HEADERS = frozenset({"cache-control", "expires", "etag", "last-modified"})


async def _http() -> ModuleType:
    global _http_layer
    _http_layer = await asyncio.to_thread(_import, ".http")
    return _http_layer


async def _rules() -> ModuleType:
    """``http.caching``, imported on a worker thread the first time."""
    global _rules_module
    if _rules_module is None:
        _rules_module = await asyncio.to_thread(_import, ".http.caching")
    return _rules_module


def _import(name: str) -> ModuleType:
    with _import_lock:
        module = sys.modules.get(f"{__package__}{name}")
        if module is None:
            interval = sys.getswitchinterval()
            sys.setswitchinterval(min(interval, _IMPORT_SWITCH_INTERVAL))
            try:
                module = importlib.import_module(name, __package__)
            finally:
                sys.setswitchinterval(interval)
        return module


def _may_be_kept(headers: Sequence[tuple[str, str]]) -> bool:
    """Whether a response could be kept at all: without freshness or a validator,
    it could never answer again, and the rules need not be consulted."""
    return any(name.lower() in _CACHING_HEADERS for name, _value in headers)
