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

Bodies are held in memory under the process's budget (``memory``). Below
memory are the tiers that outlive the process (``tiers``): the disk, shared by
the machine's processes, and the fleet's Redis. A response is written to each
when fetched, as one record with its headers; a body that left memory is read
back from the closest tier that has its record, whole (headers too), the next
time it is needed: bytes that cost no download, which do not count against
``max_total_bytes``. A miss everywhere is claimed, so that one process of the
fleet fetches while the others wait for its record. A response fetched with
credentials never goes to the fleet.

This module also imports the HTTP layer the first time it is needed (see
:func:`_http`). It knows nothing of llm.
"""

from __future__ import annotations

import asyncio
import functools
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
from ..errors import AttachmentError
from ..loops import running_loop
from ..url_text import has_credentials
from . import flights, memory
from .disk_tier import DiskTier
from .state import FetchKey
from .tier import Tier
from .tiers import CLAIM_SECONDS, Found, Tiers, Versions

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
    """Bytes downloaded for it (0 when the body came from memory or a tier)."""


STALE_KEEP = 7 * 24 * 3600.0
"""Seconds a response with a validator is kept in the tiers past its freshness: it
still saves a download, as a ``304``. One without a validator goes when it is stale."""


@dataclass
class _Entry:
    stored: Stored
    blob: memory.Blob  # its data is None once it left memory; the tiers have it whole
    versions: Versions
    """The record it is in each tier: a ``304`` refreshes those, and no other."""
    fresh_until: float = 0.0
    """``time.time()`` until which the response is fresh, as hishel computed once."""

    def fresh(self) -> bool:
        return time.time() < self.fresh_until


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
    """Told of the body as it downloads (not of one read back from memory or a tier)."""

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
        ask = _Ask(url, None, meter, config, wanted, lease, progress)
        got, _versions = await _fetch(ask, None)
        return got
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
    key, tiers = ask.key, tiers_of(ask.config, ask.key)
    entry = _entries.get(key)
    if entry is not None and memory.hold(entry.blob, ask.lease):
        return await _cached(ask, key, entry, tiers, adopted=False)
    if entry is not None:  # its body left memory: the tiers have the record whole
        _forget(key)
    return await _download(ask, tiers)


async def _cached(
    ask: _Ask, key: _Key, entry: _Entry, tiers: Tiers | None, *, adopted: bool
) -> Got:
    """:func:`content` from an entry whose body the caller's lease holds; ``adopted``:
    just read from a tier (a miss then fetches without waiting for a claim again)."""
    http = _http_layer or await _http()
    rules = await _rules()  # an entry exists: they were imported to keep it
    if entry.fresh():  # hishel said so, and it only wanes with time
        decision = rules.Fresh(entry.stored)
    else:
        decision = rules.lookup(ask.url, http.REQUEST_HEADERS, entry.stored)
    content_type = entry.stored.content_type
    if isinstance(decision, rules.Fresh):
        return Got(content_type, entry.blob if ask.wanted(content_type) else None, 0, 0)
    if isinstance(decision, rules.Miss) or not ask.wanted(content_type):
        return await _download(ask, tiers, claim=not adopted)
    fetched = await http.fetch_content(
        ask.url, ask.meter, ask.config, ask.wanted, decision.headers, ask.progress
    )
    if fetched.status != 304:
        got, _versions = await _keep(ask, key, fetched, tiers)
        return got
    refreshed = rules.refreshed(entry.stored, fetched.status, fetched.headers)
    if refreshed is None:  # it does not answer the body we hold: fetch it whole
        _forget(key)
        got, _versions = await _fetch(ask, tiers)
        return got
    entry.stored = refreshed
    entry.fresh_until = _freshness(rules, ask.url, refreshed)
    if tiers is not None:  # the records this body is, and no other
        lifetime = _lifetime(refreshed, entry.fresh_until)
        await tiers.refresh(_disk_key(key), entry.versions, refreshed.to_bytes(), lifetime)
    _remember(key, entry)
    return Got(content_type, entry.blob, fetched.requests, 0)


async def _download(ask: _Ask, tiers: Tiers | None, *, claim: bool = True) -> Got:
    """A fetch from the origin; with ``tiers`` (and ``claim``), once the claim on it
    says so."""
    if tiers is None or ask.key is None or not claim:
        got, _versions = await _fetch(ask, tiers)
        return got
    key, disk_key, rules = ask.key, _disk_key(ask.key), await _rules()
    if _http_layer is None:  # a record's freshness is counted with its request headers
        await _http()
    read = functools.partial(_read, rules, ask.url)
    seconds = min(ask.config.deadline, CLAIM_SECONDS)
    found, held = await tiers.wait_or_claim(disk_key, seconds, read)
    if found is not None:  # another process fetched it meanwhile
        return await _cached(ask, key, _adopt(ask, key, found), tiers, adopted=True)
    mark, versions = False, Versions()
    try:
        got, versions = await _fetch(ask, tiers)
        mark = True  # nothing kept: not worth waiting for, if that is so
    except AttachmentError:
        mark = True  # a failure is not worth waiting for either
        raise
    finally:
        if held is not None and held.tier not in versions and running_loop() is not None:
            # Shielded: a cancelled fetch still lets the others go on at once (failing
            # that, or with its loop closed under it, the claim expires by itself).
            await asyncio.shield(tiers.release(disk_key, held, mark=mark))
    return got


async def _fetch(ask: _Ask, tiers: Tiers | None) -> tuple[Got, Versions]:
    """The URL fetched, and kept as HTTP's rules allow; the versions the tiers kept."""
    http = _http_layer or await _http()
    fetched = await http.fetch_content(
        ask.url, ask.meter, ask.config, ask.wanted, progress=ask.progress
    )
    if ask.key is None:
        blob = ask.admit(fetched.content, keep=True) if fetched.content is not None else None
        return Got(fetched.type, blob, fetched.requests, len(fetched.content or b"")), Versions()
    return await _keep(ask, ask.key, fetched, tiers)


async def _keep(ask: _Ask, key: _Key, fetched: Any, tiers: Tiers | None) -> tuple[Got, Versions]:
    """A new response: kept and shared if HTTP's rules allow and it can ever be reused."""
    body: bytes | None = fetched.content
    downloaded = len(body or b"")
    if body is None:
        return Got(fetched.type, None, fetched.requests, 0), Versions()
    rules = await _rules() if _may_be_kept(fetched.headers) else None
    stored = None
    if rules is not None:
        stored = rules.to_store(
            ask.url, dict(fetched.request_headers), fetched.status, fetched.headers, fetched.type
        )
    if rules is None or stored is None:
        # Not shared: kept for the attachment that asked, and for a no-store response
        # only while its caller holds the prompt (see memory's leases).
        _forget(key)
        keep = rules is None or not rules.no_store(fetched.headers)
        got = Got(fetched.type, ask.admit(body, keep=keep), fetched.requests, downloaded)
        return got, Versions()
    blob = ask.admit(body, keep=True)
    fresh_until = _freshness(rules, ask.url, stored)
    lifetime = _lifetime(stored, fresh_until)
    versions = Versions()
    if tiers is not None and lifetime > 0:
        versions = await tiers.keep(_disk_key(key), body, stored.to_bytes(), lifetime)
    _remember(key, _Entry(stored, blob, versions, fresh_until))
    return Got(fetched.type, blob, fetched.requests, downloaded), versions


def _adopt(ask: _Ask, key: _Key, found: Found[_Reading]) -> _Entry:
    """A record from a tier as the entry in memory, its body held by the caller's lease."""
    stored, fresh_until = found.read
    blob = ask.admit(found.record.body, keep=True)
    entry = _Entry(stored, blob, found.versions, fresh_until)
    _remember(key, entry)
    return entry


def _freshness(rules: ModuleType, url: str, stored: Stored) -> float:
    """``time.time()`` until which ``stored`` is fresh (a hishel lookup: computed once
    per response, and kept in its entry)."""
    assert _http_layer is not None  # imported before any response is kept
    return time.time() + float(rules.fresh_for(url, _http_layer.REQUEST_HEADERS, stored))


def _lifetime(stored: Stored, fresh_until: float) -> float:
    """Seconds a tier keeps ``stored``: while fresh, and a week more with a validator."""
    validated = any(name in ("etag", "last-modified") for name, _ in stored.headers)
    return max(0.0, fresh_until - time.time()) + (STALE_KEEP if validated else 0.0)


_Reading = tuple["Stored", float]
"""A tier's record read: the response it stores, and until when it is fresh."""


def _read(rules: ModuleType, url: str, meta: bytes) -> tuple[_Reading, float] | None:
    """A tier's record meta read (see ``tiers.Read``): the response, until when it is
    fresh, and its :func:`_lifetime`; ``None`` if it is not a response's."""
    try:
        stored = rules.Stored.from_bytes(meta)
    except ValueError:
        return None
    fresh_until = _freshness(rules, url, stored)
    return (stored, fresh_until), _lifetime(stored, fresh_until)


def _remember(key: _Key, entry: _Entry) -> None:
    with _entries_lock:
        _entries[key] = entry
        _entries.move_to_end(key)
        while len(_entries) > _ENTRIES:
            _entries.popitem(last=False)


def _forget(key: _Key) -> None:
    with _entries_lock:
        _entries.pop(key, None)


def _key_of(url: str, config: Config) -> _Key:
    credential = credentials.for_url(config.credentials, url)
    asker = credential.fingerprint if credential else ("netrc" if config.netrc else "")
    return (url, config.block_private, frozenset(config.allow), asker)


def _disk_key(key: _Key) -> str:
    url, block_private, allow, asker = key
    policy = "private-blocked" if block_private else "open"
    return "\n".join([url, policy, *sorted(allow), *([f"asker {asker}"] if asker else [])])


_tiers: dict[tuple[str | None, int, str | None], Tiers | None] = {}


def tiers_of(config: Config, key: _Key | None = None) -> Tiers | None:
    """The tiers below memory of ``config``, or ``None`` when it has none. A response
    fetched with credentials (``key``'s asker) never goes to the fleet."""
    directory = (config.disk_cache_dir or _default_directory()) if config.disk_cache_bytes else None
    fleet = config.shared_cache_url if key is None or not key[3] else None
    slot = (directory, config.disk_cache_bytes, fleet)
    if slot not in _tiers:
        found: list[Tier] = []
        if directory is not None:
            found.append(DiskTier(Path(directory), config.disk_cache_bytes))
        if fleet is not None:
            from .fleet_tier import FleetTier  # redis: an extra, for fleets only

            found.append(FleetTier(fleet))
        _tiers.setdefault(slot, Tiers(tuple(found)) if found else None)
    return _tiers[slot]


def _default_directory() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "llm-async-attachments")


def read_back(url: str, config: Config) -> bytes | None:
    """The body kept for ``url`` under ``config``'s policy, from memory or, blocking,
    from disk; ``None`` if none is kept. For sync reads that prepare did not foresee."""
    key = _key_of(url, config)
    entry = _entries.get(key)
    data = entry.blob.read() if entry is not None else None
    if isinstance(data, bytes):
        return data
    tiers = tiers_of(config, key)
    disk = next((t for t in tiers.tiers if isinstance(t, DiskTier)), None) if tiers else None
    record = disk.get_blocking(_disk_key(key)) if disk is not None else None
    return record.body if record is not None else None


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
