"""URL content shared by every attachment with that URL, under HTTP's caching rules.

Separate ``llm.Attachment`` objects with the same URL share one fetch while
its response is fresh (``max-age``, ``Expires``); a stale or ``no-cache``
response is revalidated with ``If-None-Match`` / ``If-Modified-Since``, and a
``304`` costs no body; a ``no-store`` response is never kept, in memory or
on disk. The rules are RFC 9111's, as hishel decides them (see
``http.cache_rules``). Entries are kept per address policy: content fetched with
``block_private`` off, or with more hosts allowed, never answers a caller
with a stricter policy. URLs with credentials (``https://user:pw@...``) are
never shared, and a response fetched with a configured credential (or one
``.netrc`` may supply) answers only callers that send the same one.

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
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import credentials
from ..config import Config
from ..url_text import has_credentials
from . import flights, memory
from .disk_tier import DiskTier
from .state import FetchKey

if TYPE_CHECKING:
    from ..caps import Meter, Progress
    from ..http.cache_rules import Stored

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


_Key = tuple[str, bool, frozenset[str], str]
"""URL, address policy, and who asked: the fingerprint of the credential sent to the URL's
origin, ``netrc`` if ``.netrc`` may supply one, or nothing."""
_entries: OrderedDict[_Key, _Entry] = OrderedDict()
_entries_lock = threading.Lock()
_flights: flights.Flights = weakref.WeakValueDictionary()


@dataclass(frozen=True, slots=True)
class _Ask:
    """One caller's request for a URL's content, and what it brings to pay for it."""

    url: str
    key: _Key | None
    """Where the response is kept; ``None``: never shared (the URL has credentials)."""
    meter: Meter
    config: Config
    wanted: Callable[[str | None], bool]
    lease: memory.Lease
    progress: Progress | None
    """Told of the body as it downloads (not of one read back from memory or disk)."""

    def admit(self, body: bytes, *, keep: bool) -> memory.Blob:
        """``body`` under the memory budget, held by this caller's lease."""
        return memory.admit(body, keep=keep, budget=self.config.cache_bytes, lease=self.lease)


async def content(
    url: str,
    meter: Meter,
    config: Config,
    settings: FetchKey,
    wanted: Callable[[str | None], bool],
    lease: memory.Lease,
    progress: Progress | None = None,
) -> Got:
    """The type of ``url`` and, if ``wanted(type)``, its body, from the cache if it may.

    ``settings`` is ``fetch_key(config)``, which the caller has at hand. ``progress``
    is told of a body this call downloads; a caller that waits for another's
    download of the same URL is not.
    """
    if has_credentials(url):
        return await _download(_Ask(url, None, meter, config, wanted, lease, progress))
    ask = _Ask(url, _key_of(url, config), meter, config, wanted, lease, progress)
    flight = (asyncio.get_running_loop(), url, settings)
    # One fetch at a time per URL and settings on a loop: the others then find it cached.
    # A failure is shared with those waiting, as a copy each (see ``flights``): a hundred
    # attachments of one dead URL wait once, not in turn.
    while await flights.wait(_flights, flight):
        pass
    return await flights.fly(_flights, flight, lambda: _fetched(ask))


async def _fetched(ask: _Ask) -> Got:
    assert ask.key is not None
    tier = _tier(ask.config)
    if tier is not None and not tier.scanned:
        await _scan(tier)
    if ask.key not in _entries and (tier is None or not tier.may_have(_disk_key(ask.key))):
        # Nothing kept (the usual case): straight to the download, one frame fewer
        # for each of thousands of fetches that may be waiting for a slot.
        return await _download(ask)
    return await _cached(ask, ask.key, tier)


async def _cached(ask: _Ask, key: _Key, tier: DiskTier | None) -> Got:
    """:func:`content` once something may be kept for ``key`` (``tier``: the config's)."""
    http = _http_layer or await _http()
    entry = _entries.get(key)
    if entry is None and tier is not None:
        entry = await _from_disk(tier, key, ask.config)
    if entry is None:
        return await _download(ask)
    rules = await _rules()  # an entry exists: they were imported to keep it
    if entry.fresh():  # hishel said so, and it only wanes with time
        decision = rules.Fresh(entry.stored)
    else:
        decision = rules.lookup(ask.url, http.REQUEST_HEADERS, entry.stored)
    if isinstance(decision, rules.Miss):
        return await _download(ask)
    content_type = entry.stored.content_type
    if not ask.wanted(content_type):
        if isinstance(decision, rules.Fresh):
            return Got(content_type, None, 0, 0)
        return await _download(ask)
    blob = await _body(ask, entry, tier)
    if blob is None:  # gone from memory and disk: fetch it whole
        _forget(key)
        return await _download(ask)
    if isinstance(decision, rules.Fresh):
        return Got(content_type, blob, 0, 0)
    fetched = await http.fetch_content(
        ask.url, ask.meter, ask.config, ask.wanted, decision.headers, ask.progress
    )
    if fetched.status == 304:
        refreshed = rules.refreshed(entry.stored, fetched.status, fetched.headers)
        if refreshed is not None:
            entry.stored = refreshed
            entry.fresh_until = _freshness(rules, ask.url, refreshed)
            if entry.on_disk and tier is not None:  # the copy on disk carries them too
                entry.on_disk = await tier.put(
                    entry.disk_key, blob_bytes(blob), refreshed.to_bytes()
                )
            _remember(key, entry)
            return Got(content_type, blob, fetched.requests, 0)
        _forget(key)
        return await _download(ask)
    return await _keep(ask, key, fetched, tier)


async def _download(ask: _Ask) -> Got:
    http = _http_layer or await _http()
    fetched = await http.fetch_content(
        ask.url, ask.meter, ask.config, ask.wanted, progress=ask.progress
    )
    if ask.key is None or fetched.content is None:
        blob = None
        if fetched.content is not None:
            blob = ask.admit(fetched.content, keep=True)
        return Got(fetched.type, blob, fetched.requests, len(fetched.content or b""))
    return await _keep(ask, ask.key, fetched, _tier(ask.config))


async def _keep(ask: _Ask, key: _Key, fetched: Any, tier: DiskTier | None) -> Got:
    """A new response: kept and shared if HTTP's rules allow and it can ever be reused."""
    body: bytes | None = fetched.content
    downloaded = len(body or b"")
    if body is None:
        return Got(fetched.type, None, fetched.requests, 0)
    rules = await _rules() if _may_be_kept(fetched.headers) else None
    stored = None
    if rules is not None:
        stored = rules.to_store(
            ask.url, dict(fetched.request_headers), fetched.status, fetched.headers, fetched.type
        )
    if rules is None or stored is None:
        # Not shared: kept for this attachment only, or (no-store) only while this
        # prepare and the execute after it need it.
        _forget(key)
        keep = rules is None or not rules.no_store(fetched.headers)
        return Got(fetched.type, ask.admit(body, keep=keep), fetched.requests, downloaded)
    disk_key = _disk_key(key)
    blob = ask.admit(body, keep=True)
    # Written now, while it is in hand: it may leave memory at the end of any lease.
    on_disk = tier is not None and await tier.put(disk_key, body, stored.to_bytes())
    entry = _Entry(stored, blob, disk_key, on_disk, _freshness(rules, ask.url, stored))
    _remember(key, entry)
    return Got(fetched.type, blob, fetched.requests, downloaded)


async def _body(ask: _Ask, entry: _Entry, tier: DiskTier | None) -> memory.Blob | None:
    """The entry's body held by the caller's lease: from memory, else read back from disk."""
    blob = entry.blob
    if memory.hold(blob, ask.lease):
        return blob
    if tier is None:
        return None
    found = await tier.get(entry.disk_key) if entry.on_disk else None
    if found is None:
        return None
    entry.blob = ask.admit(found[0], keep=True)
    return entry.blob


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


def _key_of(url: str, config: Config) -> _Key:
    credential = credentials.for_url(config.credentials, url)
    asker = credential.fingerprint if credential else ("netrc" if config.netrc else "")
    return (url, config.block_private, frozenset(config.allow), asker)


def _disk_key(key: _Key) -> str:
    url, block_private, allow, asker = key
    policy = "private-blocked" if block_private else "open"
    return "\n".join([url, policy, *sorted(allow), *([f"asker {asker}"] if asker else [])])


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
    entry = _entries.get(_key_of(url, config))
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
    entry = _entries.get(_key_of(url, config))
    if entry is not None and entry.fresh():
        return entry.stored.content_type, 0
    http = _http_layer or await _http()
    fetched = await http.fetch_type(url, config)
    return fetched.type, fetched.requests


# The HTTP layer imports httpx2, httpcore2, h11 and anyio's asyncio backend: tens of
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
_PACKAGE = __name__.partition(".")[0]
_CACHING_HEADERS = frozenset({"cache-control", "expires", "etag", "last-modified"})


async def _http() -> ModuleType:
    global _http_layer
    _http_layer = await asyncio.to_thread(_import, f"{_PACKAGE}.http")
    return _http_layer


async def _rules() -> ModuleType:
    """``http.cache_rules``, imported on a worker thread the first time."""
    global _rules_module
    if _rules_module is None:
        _rules_module = await asyncio.to_thread(_import, f"{_PACKAGE}.http.cache_rules")
    return _rules_module


def _import(name: str) -> ModuleType:
    with _import_lock:
        module = sys.modules.get(name)
        if module is None:
            interval = sys.getswitchinterval()
            sys.setswitchinterval(min(interval, _IMPORT_SWITCH_INTERVAL))
            try:
                module = importlib.import_module(name)
            finally:
                sys.setswitchinterval(interval)
        return module


def _may_be_kept(headers: Sequence[tuple[str, str]]) -> bool:
    """Whether a response could be kept at all: without freshness or a validator,
    it could never answer again, and the rules need not be consulted."""
    return any(name.lower() in _CACHING_HEADERS for name, _value in headers)
