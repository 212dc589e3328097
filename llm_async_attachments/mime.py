"""MIME types: normalising headers, sniffing bytes as llm does, matching patterns.

Sniffing gives puremagic's own answer, found faster. puremagic (which llm
uses) compares every one of its ~1,400 header signatures with every file,
about 0.7 ms a file on a worker thread that holds the GIL throughout. Here
the signatures are indexed once by their offset and first bytes, so a head
is compared only with the few signatures that can match it; the footers,
the multi-part rules and the ranking are puremagic's, step for step. This
module is the one place that reads puremagic's internals (see
:class:`_Signatures`); if a release lacks one, ``puremagic.from_string``
itself is called.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import puremagic

# llm.utils.MIME_TYPE_FIXES, repeated so that sniffing needs no llm import.
_FIXES = {"audio/wave": "audio/wav"}

_TOKEN = r"[a-z0-9!#$%&'*+.^_`|~-]{1,127}"
_MIME = re.compile(f"{_TOKEN}/{_TOKEN}")

# Bytes to read for sniffing when puremagic does not say; above the 36,870 that
# puremagic 1.28 to 2.2 read from the start of a file.
FALLBACK_SNIFF_BYTES = 64 * 1024
# Bytes from the end of a file when puremagic does not say; above its 516.
FALLBACK_FOOT_BYTES = 4 * 1024


def sniff_bytes(module: Any = puremagic) -> int:
    """How many leading bytes puremagic reads to identify a file.

    puremagic keeps that number in ``puremagic.main.max_head``, a private name
    (1.28 to 2.2 all have it). This is the one place that reads it; if a
    release drops or changes it, a larger fixed head is read instead and
    sniffing still works.
    """
    return _private_size(module, "max_head", FALLBACK_SNIFF_BYTES)


def foot_bytes(module: Any = puremagic) -> int:
    """How many trailing bytes puremagic reads to identify a file (``max_foot``)."""
    return _private_size(module, "max_foot", FALLBACK_FOOT_BYTES)


def _private_size(module: Any, name: str, fallback: int) -> int:
    value = getattr(getattr(module, "main", None), name, None)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return fallback


# puremagic reads at most this many bytes from the start of a file,
SNIFF_BYTES = sniff_bytes()
# and at most this many from its end.
FOOT_BYTES = foot_bytes()


def normalise(content_type: str | None) -> str | None:
    """``Text/Plain; charset=UTF-8`` -> ``text/plain``; missing or malformed -> ``None``.

    Parameters are dropped so that a server's type compares equal to the plain
    types in a model's ``attachment_types``. Of repeated headers (joined with
    commas) the first counts; anything that is not ``type/subtype`` made of
    RFC 9110 token characters is no type at all.
    """
    if not content_type:
        return None
    essence = content_type.split(",", 1)[0].split(";", 1)[0].strip().lower()
    if not _MIME.fullmatch(essence):
        return None
    return _FIXES.get(essence, essence)


def usable(content_type: str | None) -> bool:
    """Whether a server-declared type says anything; ``application/octet-stream`` does not."""
    return content_type not in (None, "application/octet-stream")


def sniff(data: bytes, filename: str | None = None) -> str | None:
    """The type llm would detect for these bytes (``puremagic`` plus llm's fixes).

    With ``filename`` this equals ``llm.utils.mimetype_from_path`` on a file
    holding ``data``: puremagic uses the extension to break ties.
    """
    if not data:
        return None
    signatures = _signatures()
    if signatures is None:
        return _puremagic_sniff(data, filename)
    head, foot = data[: signatures.head], data[-signatures.foot :]
    return _fixed(signatures.mime_type(head, foot, filename))


def sniffs_from_ends() -> bool:
    """Whether :func:`sniff_ends` gives llm's type for a file: with the puremagic
    releases the index follows (1.x), which read a file's ends only. Others may
    read more of it (2.x scans some formats' contents): read the file whole first."""
    return _signatures() is not None


def sniff_ends(head: bytes, foot: bytes, filename: str | None = None) -> str | None:
    """:func:`sniff` of a file from its first :data:`SNIFF_BYTES` and last :data:`FOOT_BYTES`.

    These are the bytes ``puremagic.from_file`` reads (all of a file shorter
    than either), so a file's type is known before the rest of it is read.
    With ``filename`` the file's path, this equals llm's
    ``mimetype_from_path``, except that an empty file is no type (where
    puremagic raises ``ValueError``).
    """
    if not head:
        return None
    signatures = _signatures()
    if signatures is None:
        # from_string slices its head and foot from one string: joined, these give them back.
        return _puremagic_sniff(head if len(head) < SNIFF_BYTES else head + foot, filename)
    head, foot = head[: signatures.head], foot[-signatures.foot :]
    return _fixed(signatures.mime_type(head, foot, filename))


def _puremagic_sniff(data: bytes, filename: str | None) -> str | None:
    """puremagic's own sniff, for a release whose internals :class:`_Signatures` lacks."""
    try:
        return _fixed(puremagic.from_string(data, mime=True, filename=filename))
    except puremagic.PureError:
        return None


def _fixed(detected: str | None) -> str | None:
    return _FIXES.get(detected, detected) if detected else None


class _Row(NamedTuple):
    """One of puremagic's signatures (its ``PureMagic``), as this module reads it."""

    byte_match: bytes
    offset: int
    extension: str
    mime_type: str
    name: str  # unused, but kept: a multi-part match's hash, and so puremagic's order, has it


# A signature indexed by its offset: (its position in puremagic's header table, itself).
_Indexed = tuple[int, _Row]


class _Signatures:
    """puremagic's tables, indexed by offset and first bytes; its matching, step for step.

    Read from puremagic 1.30's ``main.py`` (``_identify_all``, ``_confidence``,
    ``_magic``, ``ext_from_filename``); they rely on
    ``magic_header_array``, ``magic_footer_array``, ``multi_part_dict``,
    ``extension_only_array``, ``max_head`` and ``max_foot``: a release
    without any of them, or with a signature the index cannot hold, makes
    :func:`_signatures` give ``None``, and puremagic is called instead.

    The order of a file's matches decides ties, as in puremagic: header
    signatures in table order (the index keeps each one's position), then
    footers, then multi-part matches from a set built in the same order.
    """

    def __init__(self, module: Any) -> None:
        main = module.main
        self.head: int = main.max_head
        self.foot: int = main.max_foot
        self.headers: list[_Row] = [_row(row) for row in main.magic_header_array]
        self.footers: list[_Row] = [_row(row) for row in main.magic_footer_array]
        self.multi_part: dict[bytes, list[_Row]] = {
            bytes(key): [_row(row) for row in rows] for key, rows in main.multi_part_dict.items()
        }
        self.extension_only: list[_Row] = [_row(row) for row in main.extension_only_array]
        self.extensions = frozenset(row.extension for row in self.headers + self.footers)
        # offset -> first two bytes there -> signatures (of two bytes or more)
        pairs: dict[int, dict[bytes, list[_Indexed]]] = {}
        # offset -> the byte there -> signatures of one byte
        singles: dict[int, dict[bytes, list[_Indexed]]] = {}
        for index, row in enumerate(self.headers):
            if row.offset < 0 or not row.byte_match:
                raise ValueError(f"a header signature this index cannot hold: {row!r}")
            table = pairs if len(row.byte_match) >= 2 else singles
            key = row.byte_match[:2]
            table.setdefault(row.offset, {}).setdefault(key, []).append((index, row))
        self.pairs = sorted(pairs.items())
        self.singles = sorted(singles.items())

    def mime_type(self, head: bytes, foot: bytes, filename: str | None) -> str | None:
        """puremagic's ``_magic(head, foot, mime=True, ext)``; ``None`` for its ``PureError``."""
        size = len(head)
        found: list[_Indexed] = []
        for offsets, width in ((self.pairs, 2), (self.singles, 1)):
            for offset, by_start in offsets:
                if offset + width > size:
                    break  # sorted: no later offset fits either
                candidates = by_start.get(head[offset : offset + width])
                if candidates:
                    for indexed in candidates:
                        match = indexed[1].byte_match
                        end = offset + len(match)
                        if end <= size and head[offset:end] == match:
                            found.append(indexed)
        found.sort()
        matches = [row for _, row in found]
        # From here on, puremagic's _identify_all as written.
        for row in self.footers:
            start, end = row.offset, row.offset + len(row.byte_match)
            if (foot[start:end] if end != 0 else foot[start:]) == row.byte_match:
                matches.append(row)
        new_matches: set[_Row] = set()
        for matched in matches:
            for row in self.multi_part.get(matched.byte_match, ()):
                start, end = row.offset, row.offset + len(row.byte_match)
                if row.offset < 0:
                    if (foot[start:end] if end != 0 else foot[start:]) == row.byte_match:
                        new_matches.add(
                            row._replace(byte_match=matched.byte_match + row.byte_match)
                        )
                elif end <= size and head[start:end] == row.byte_match:
                    new_matches.add(row._replace(byte_match=head[matched.offset : end]))
        matches.extend(list(new_matches))
        ext = self.extension(filename) if filename else None
        return _best(matches, ext, self.extension_only)

    def extension(self, filename: str) -> str:
        """puremagic's ``ext_from_filename``, its extensions gathered once."""
        try:
            base, ext = str(filename).lower().rsplit(".", 1)
        except ValueError:
            return ""
        ext = f".{ext}"
        if base[-4:].startswith(".") and base[-4:] + ext in self.extensions:
            return base[-4:] + ext  # double extensions such as .tar.gz
        return ext


def _best(matches: Sequence[_Row], ext: str | None, extension_only: Sequence[_Row]) -> str | None:
    """The MIME type of the match puremagic's ``_confidence`` ranks first.

    Its confidence: 0.1 per byte matched up to 0.8, 0.9 when the file's
    extension is the signature's; then the longer match; then the earlier
    (its sort is stable). With no match, the types registered for the
    extension alone, at 0.1.
    """
    ranked: list[tuple[float, _Row]] = []
    for row in matches:
        length = len(row.byte_match)
        confidence = 0.8 if length >= 9 else float(f"0.{length}")
        if confidence >= 0.1 and ext and ext == row.extension:
            confidence = 0.9
        ranked.append((confidence, row))
    if not ranked and ext:
        ranked = [(0.1, row) for row in extension_only if ext == row.extension]
    best: tuple[float, int] | None = None
    found: _Row | None = None
    for confidence, row in ranked:
        key = (confidence, len(row.byte_match))
        if best is None or key > best:
            best, found = key, row
    return None if found is None else found.mime_type


def _row(row: Any) -> _Row:
    return _Row(bytes(row.byte_match), int(row.offset), row.extension, row.mime_type, row.name)


@functools.cache
def _signatures() -> _Signatures | None:
    """The index, built on first use (a few milliseconds); ``None`` if puremagic changed
    (any release but 1.x, whose matching the index follows: puremagic is called then)."""
    if not str(getattr(puremagic, "__version__", "")).startswith("1."):
        return None
    try:
        return _Signatures(puremagic)
    except (AttributeError, TypeError, ValueError):
        return None


def matches(content_type: str | None, patterns: Iterable[str]) -> bool:
    """Whether a type matches any of ``patterns`` (``image/png``, ``image/*``, ``*/*``)."""
    if content_type is None:
        return False
    major = content_type.split("/", 1)[0]
    for pattern in patterns:
        pattern = pattern.strip().lower()
        if pattern in ("*", "*/*", content_type):
            return True
        if pattern.endswith("/*") and pattern[:-2] == major:
            return True
    return False
