"""When a URL's kept response may answer again: RFC 9111's rules, as hishel decides them.

The shared cache of URL content keeps, for each URL, the body and a
:class:`Stored` record of the response. This module is the one place that
imports hishel, and only its sans-io state machine (``IdleClient``,
``CacheMiss``, ``NeedRevalidation``) with ``CacheOptions(shared=True)``: we
are a *shared* cache, since one process serves many callers. hishel's
transports and storages are not used (ours keep the decoder, the cancellation
gate, the address policy and a size limit). Nothing here knows of llm.

What hishel decides, and so what we follow:

- **Storing** (RFC 9111 §3, :func:`to_store`): never with ``no-store``, never
  with ``private`` (we are shared), never a 206 or 304, and never when
  credentials were sent (``Authorization``, which the URL's ``user:password@``
  becomes) unless the response says ``public``, ``s-maxage`` or
  ``must-revalidate``. Otherwise it needs ``public``, ``Expires``,
  ``max-age``, ``s-maxage`` or a heuristically cacheable status (200, 203,
  204, 300, 301, 308, 404, 405, 410, 414, 501).
- **Freshness** (§4.2, :func:`lookup`): ``s-maxage`` first, then ``max-age``,
  then ``Expires`` minus ``Date`` (an invalid ``Expires`` is already
  expired). With none of these, a heuristic (§4.2.2): 10% of the time since
  ``Last-Modified``, at most a week; with no ``Last-Modified`` either, the
  response is never fresh. Its age is now minus its ``Date``.
- **Reuse** (§4): a fresh response answers without a request unless it says
  ``no-cache`` or its ``Vary`` names a request header whose value differs
  (``Vary: *`` never matches). Otherwise it must be revalidated: a
  conditional request with ``If-None-Match`` (from its ``ETag``) and
  ``If-Modified-Since`` (from its ``Last-Modified``). Stale responses are
  never served.
- **Freshening** (§3.2, §4.3.4, :func:`refreshed`): a 304 whose validator
  matches the kept response replaces its headers, except those describing
  the body (``Content-Type``, ``Content-Encoding``, ``Content-Range``,
  ``Content-Length``).
- Connection-specific fields and those named by ``no-cache="..."`` or (we are
  shared) ``private="..."`` are not kept (§3.1).

What we add, none of it overriding hishel:

- A response without a valid ``Date`` gets the time it was received, as
  RFC 9110 §6.6.1 asks of a recipient that caches it: hishel computes age
  from ``Date`` alone, and without one a response would never age.
- A response that could never answer again (no freshness and no validator)
  is not kept, and a stale one without a validator is a :class:`Miss`, not a
  conditional request that has nothing to send.
- Credentials are never kept: not the URL's password (:attr:`Stored.url` is
  redacted), nor ``Authorization``, ``Proxy-Authorization`` or ``Cookie``
  among the request headers, nor ``Set-Cookie`` among the response's. Which
  URLs share an entry is the store's key; this module only checks that the
  kept URL is the one asked for.
"""

from __future__ import annotations

import calendar
import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from email.utils import formatdate, parsedate_tz
from types import MappingProxyType
from typing import Any, Self

import hishel

# hishel's own freshness arithmetic, which its state machine uses but does not
# export: read in hishel 2.0.0's _core/_spec.py (get_freshness_lifetime, get_age).
from hishel._core import _spec

from ..errors import redact
from ..url_text import has_credentials

__all__ = [
    "Fresh",
    "Miss",
    "Revalidate",
    "Stored",
    "fresh_for",
    "lookup",
    "no_store",
    "refreshed",
    "to_store",
]

Pairs = tuple[tuple[str, str], ...]

_OPTIONS = hishel.CacheOptions(shared=True)
_ENTRY = uuid.UUID(int=0)  # hishel's entries need an id; we hand it one entry at a time
_FORMAT = 1  # of Stored.to_bytes; another number is malformed
# Request headers never kept: credentials, and the conditions of the request
# that fetched the response (they say nothing about what it varies on).
_REQUEST_NOT_KEPT = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "if-none-match",
        "if-modified-since",
        "if-match",
        "if-unmodified-since",
        "if-range",
    }
)
_RESPONSE_NOT_KEPT = frozenset({"set-cookie", "set-cookie2"})  # sessions, never used here
_CREDENTIALS = "(credentials)"  # all hishel sees of them: that they were sent


@dataclass(frozen=True)
class Stored:
    """What the shared cache keeps about a URL's response, besides its body.

    ``headers`` are the response's as hishel keeps them (names lower-cased,
    repeated fields as repeated pairs), always with a ``date``: its age is
    counted from there. ``request_headers`` are those the request sent, for
    ``Vary``. ``content_type`` is the type resolved for the body (declared or
    sniffed), which a 304 does not change.
    """

    url: str
    request_headers: Pairs
    headers: Pairs
    content_type: str | None

    def to_bytes(self) -> bytes:
        """This record as JSON, for the disk tier; :meth:`from_bytes` reads it back."""
        return json.dumps(
            {
                "format": _FORMAT,
                "url": self.url,
                "request_headers": self.request_headers,
                "headers": self.headers,
                "content_type": self.content_type,
            },
            separators=(",", ":"),
        ).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """The record :meth:`to_bytes` wrote; ``ValueError`` for anything else."""
        try:
            fields = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise ValueError(f"not a stored response: {error}") from None
        if not isinstance(fields, dict) or set(fields) != {
            "format",
            "url",
            "request_headers",
            "headers",
            "content_type",
        }:
            raise ValueError("not a stored response: wrong fields")
        if fields["format"] != _FORMAT:
            raise ValueError(f"not a stored response: format {fields['format']!r}")
        url, content_type = fields["url"], fields["content_type"]
        if not isinstance(url, str) or not (content_type is None or isinstance(content_type, str)):
            raise ValueError("not a stored response: url or content_type is not a string")
        return cls(
            url,
            _pairs_from_json(fields["request_headers"]),
            _pairs_from_json(fields["headers"]),
            content_type,
        )


@dataclass(frozen=True)
class Fresh:
    """The kept response answers as it is: serve its body, send no request."""

    stored: Stored


@dataclass(frozen=True)
class Revalidate:
    """Ask the server whether the kept response still holds: send ``headers`` with the GET.

    A 304 then goes to :func:`refreshed`; any other answer replaces the kept one.
    """

    stored: Stored
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Miss:
    """Nothing kept can answer: fetch the URL as if nothing were kept."""


def lookup(
    url: str, request_headers: Mapping[str, str], stored: Stored | None
) -> Fresh | Revalidate | Miss:
    """Whether ``stored`` answers a GET of ``url`` with ``request_headers``, as hishel decides."""
    if stored is None:
        return Miss()
    state = hishel.IdleClient(options=_OPTIONS).next(
        _request(url, request_headers.items()), [_entry(stored)]
    )
    if isinstance(state, hishel.FromCache):
        return Fresh(stored)
    if isinstance(state, hishel.NeedRevalidation):
        sent, asked = state.original_request.headers, state.request.headers
        conditions = {
            _title(name): asked[name]
            for name in asked
            if name not in sent or sent[name] != asked[name]
        }
        if conditions:
            return Revalidate(stored, MappingProxyType(conditions))
    return Miss()


def fresh_for(url: str, request_headers: Mapping[str, str], stored: Stored) -> float:
    """Seconds from now during which :func:`lookup` answers :class:`Fresh` for
    ``stored`` (0 when it does not now): its freshness lifetime minus its age,
    as hishel computes them. Freshness only wanes with time, so a caller may
    answer :class:`Fresh` itself until then, without asking hishel again
    (each :func:`lookup` parses every header: hundreds of microseconds).
    """
    if not isinstance(lookup(url, request_headers, stored), Fresh):
        return 0.0
    response = _entry(stored).response
    lifetime = _spec.get_freshness_lifetime(response, is_cache_shared=True)
    if lifetime is None:
        return 0.0
    return max(0.0, float(lifetime - _spec.get_age(response)))


def to_store(
    url: str,
    request_headers: Mapping[str, str],
    status: int,
    headers: Sequence[tuple[str, str]],
    content_type: str | None,
) -> Stored | None:
    """What to keep of a full response to a GET of ``url``; ``None`` when it must not be kept.

    ``request_headers`` are those sent (credentials in ``url`` count as sent);
    ``headers`` the response's, as received.
    """
    request = _request(url, request_headers.items())
    kept = _storable(request, status, _dated(headers))
    if kept is None:
        return None
    stored = Stored(
        redact(url),
        tuple(
            (name.lower(), value)
            for name, value in request_headers.items()
            if name.lower() not in _REQUEST_NOT_KEPT
        ),
        kept,
        content_type,
    )
    if isinstance(lookup(url, request_headers, stored), Miss):
        return None  # could never answer again: keeping its body would only take room
    return stored


def no_store(headers: Iterable[tuple[str, str]]) -> bool:
    """Whether a response says ``Cache-Control: no-store``: then nothing may keep it,
    not even the attachment it was fetched for, beyond the use it was fetched for."""
    return any(
        directive.strip().partition("=")[0].strip().lower() == "no-store"
        for name, value in headers
        if name.lower() == "cache-control"
        for directive in value.split(",")
    )


def refreshed(stored: Stored, status: int, headers: Sequence[tuple[str, str]]) -> Stored | None:
    """``stored`` freshened by the answer to its conditional request, or ``None``.

    A 304 that matches ``stored`` (same strong ``ETag``, else same
    ``Last-Modified``) gives ``stored`` with the 304's headers merged in, body
    descriptions excepted. ``None`` for any other status (use that response
    instead), for a 304 that does not match (fetch again, unconditionally), and
    when the merged headers forbid keeping it.
    """
    if status != 304:
        return None
    entry = _entry(stored)
    state = hishel.NeedRevalidation(
        request=entry.request,
        original_request=entry.request,
        revalidating_entries=[entry],
        options=_OPTIONS,
    ).next(hishel.Response(status_code=304, headers=_headers(_dated(headers))))
    if not isinstance(state, hishel.NeedToBeUpdated):
        return None
    merged = _pairs(state.updating_entries[-1].response.headers)
    kept = _storable(entry.request, 200, merged)
    return None if kept is None else replace(stored, headers=kept)


def _storable(
    request: hishel.Request, status: int, headers: Iterable[tuple[str, str]]
) -> Pairs | None:
    """The response headers to keep, or ``None`` if hishel will not store the response."""
    state = hishel.CacheMiss(request=request, options=_OPTIONS).next(
        hishel.Response(status_code=status, headers=_headers(headers))
    )
    if not isinstance(state, hishel.StoreAndUse):
        return None
    return tuple(
        (name, value)
        for name, value in _pairs(state.response.headers)
        if name not in _RESPONSE_NOT_KEPT
    )


def _request(url: str, request_headers: Iterable[tuple[str, str]]) -> hishel.Request:
    """hishel's view of a GET of ``url``: the URL redacted, credentials only as present.

    The conditions of an earlier request are left out: hishel adds its own.
    """
    given = list(request_headers)
    pairs = [(name, value) for name, value in given if name.lower() not in _REQUEST_NOT_KEPT]
    if has_credentials(url) or any(name.lower() == "authorization" for name, _ in given):
        pairs.append(("authorization", _CREDENTIALS))
    return hishel.Request(method="GET", url=redact(url), headers=_headers(pairs))


def _entry(stored: Stored) -> hishel.Entry:
    return hishel.Entry(
        id=_ENTRY,
        request=_request(stored.url, stored.request_headers),
        response=hishel.Response(status_code=200, headers=_headers(stored.headers)),
    )


def _dated(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with the time of receipt as ``Date`` unless they carry a valid one."""
    pairs = list(headers)
    dates = [value for name, value in pairs if name.lower() == "date"]
    if len(dates) == 1 and _parses(dates[0]):
        return pairs
    received = formatdate(time.time(), usegmt=True)
    return [(name, value) for name, value in pairs if name.lower() != "date"] + [("date", received)]


def _parses(date: str) -> bool:
    """Whether hishel can read ``date`` (``hishel._utils.parse_date``, which is private)."""
    try:
        parsed = parsedate_tz(date)
        return parsed is not None and isinstance(calendar.timegm(parsed[:6]), int)
    except Exception:  # a year like 99999 parses, then fails in timegm
        return False


def _headers(pairs: Iterable[tuple[str, str]]) -> hishel.Headers:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name.lower(), []).append(value)
    return hishel.Headers(grouped)


def _pairs(headers: hishel.Headers) -> Pairs:
    return tuple((name, value) for name in headers for value in headers.get_list(name) or ())


def _title(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def _pairs_from_json(value: Any) -> Pairs:
    if not isinstance(value, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)
        for pair in value
    ):
        raise ValueError("not a stored response: headers are not [name, value] string pairs")
    return tuple((name, value) for name, value in value)
