"""One immutable configuration object, its defaults and its environment overrides.

Each setting is described once, in its field's metadata: the doc shown in
docs/configuration.md and a :class:`Kind`, which says how the environment
spells it, how it is parsed and which values are valid.

An invalid environment variable never breaks sync llm: the process warns
once (:class:`ConfigurationWarning`) and carries on with the default, while
async use, the work this package does, raises :class:`ConfigurationError`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import re
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from . import credentials, url_support_setting
from .caps import human
from .credentials import Credential
from .errors import ConfigurationError, ConfigurationWarning
from .url_support_setting import UrlTypes

__all__ = [
    "Config",
    "GuardMode",
    "Kind",
    "UrlTypes",
    "configure",
    "environment_problems",
    "get_config",
]

GuardMode = Literal["raise", "strict", "warn", "off"]

KiB = 1024
MiB = 1024 * KiB
ENV_PREFIX = "LLM_ASYNC_ATTACHMENTS_"


@dataclass(frozen=True)
class Kind:
    """One kind of setting: how the environment spells it, how it is parsed, what is valid."""

    parse: Callable[[str], object]
    """Environment text -> value; raises ``ValueError`` on text it cannot read."""
    valid: Callable[[object], bool]
    """Whether a value, parsed or passed to ``Config(...)``, is allowed."""
    expected: str
    """What a valid value is, for ``Config(...)``: ``a positive integer``."""
    spelled: str
    """What valid environment text is: ``a positive size in bytes, ...``."""
    example: str
    """Valid environment text, shown in messages."""
    secret: bool = False
    """The value is never shown: messages name the setting and what is wrong with it."""


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _non_negative_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _positive_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _optional_directory(value: object) -> bool:
    return value is None or (isinstance(value, str) and bool(value.strip()))


def _optional_positive_number(value: object) -> bool:
    return value is None or _positive_number(value)


def _guard_mode(value: object) -> bool:
    return value in get_args(GuardMode)


def _flag(value: object) -> bool:
    return isinstance(value, bool)


def _host_list(value: object) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(entry, str) and entry.strip() and " " not in entry.strip() for entry in value
    )


_NUMBER_AND_UNIT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)", re.IGNORECASE | re.ASCII)
# Decimal units are powers of 1000 and binary ones of 1024, as in IEC 80000-13.
SIZE_UNITS: dict[str, int | Decimal] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": KiB,
    "mib": MiB,
    "gib": 1024 * MiB,
}
DURATION_UNITS: dict[str, int | Decimal] = {
    "": 1,
    "s": 1,
    "ms": Decimal("0.001"),
    "m": 60,
    "h": 3600,
}


def _number_and_unit(raw: str, units: Mapping[str, int | Decimal]) -> Decimal:
    match = _NUMBER_AND_UNIT.fullmatch(raw.strip())
    if match is None or match[2].lower() not in units:
        raise ValueError(raw)
    return Decimal(match[1]) * units[match[2].lower()]


def parse_size(raw: str) -> int:
    """``64MB`` -> 64000000, ``1.5MiB`` -> 1572864: bytes, rounded to the nearest byte.

    Units are case-insensitive: ``b``; ``kB``, ``MB``, ``GB`` (powers of 1000);
    ``KiB``, ``MiB``, ``GiB`` (powers of 1024). No unit means bytes.
    """
    return int(_number_and_unit(raw, SIZE_UNITS).to_integral_value(ROUND_HALF_UP))


def parse_duration(raw: str) -> float:
    """``2.5`` -> 2.5, ``500ms`` -> 0.5, ``2m`` -> 120.0: seconds.

    Units are case-insensitive: ``ms``, ``s``, ``m`` (minutes), ``h``. No unit
    means seconds.
    """
    return float(_number_and_unit(raw, DURATION_UNITS))


def _parse_int(raw: str) -> int:
    if not raw.strip().isdigit() or not raw.strip().isascii():
        raise ValueError(raw)
    return int(raw)


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(entry.strip() for entry in raw.split(",") if entry.strip())


_SECONDS = (
    "a positive number of seconds (10, 2.5), or a number with a unit: "
    "ms, s, m or h (500ms, 10s, 2m)"
)
SIZE = Kind(
    parse_size,
    _positive_int,
    "a positive integer (bytes)",
    "a positive size in bytes, with an optional unit: kB, MB, GB (powers of 1000) "
    "or KiB, MiB, GiB (powers of 1024)",
    "64MB",
)
SIZE_OR_ZERO = Kind(
    parse_size,
    _non_negative_int,
    "0 or a positive integer (bytes)",
    "0, or a positive size in bytes with an optional unit: kB, MB, GB (powers of 1000) "
    "or KiB, MiB, GiB (powers of 1024)",
    "1GiB",
)
DIRECTORY = Kind(
    os.path.expanduser,
    _optional_directory,
    "a directory path, or None",
    "a directory path; unset for the default",
    "~/.cache/llm-async-attachments",
)
COUNT = Kind(_parse_int, _positive_int, "a positive integer", "a positive integer", "8")
RETRIES = Kind(_parse_int, _non_negative_int, "0 or more", "0 or a positive integer", "2")
SECONDS = Kind(parse_duration, _positive_number, "a positive number of seconds", _SECONDS, "2.5s")
SECONDS_OR_NONE = Kind(
    parse_duration,
    _optional_positive_number,
    "a positive number of seconds, or None",
    f"{_SECONDS}; unset for no limit",
    "30s",
)
GUARD = Kind(
    str.lower,
    _guard_mode,
    "one of raise, strict, warn, off",
    "one of raise, strict, warn, off",
    "strict",
)
FLAG = Kind(_parse_bool, _flag, "True or False", "one of 1/0, true/false, yes/no, on/off", "1")
HOSTS = Kind(
    _parse_list,
    _host_list,
    "a tuple of host names, addresses or networks",
    "a comma-separated list of host names, IP addresses and CIDR networks",
    "files.internal,10.0.0.0/8",
)
URL_TYPES = Kind(
    url_support_setting.parse,
    url_support_setting.valid,
    "a tuple of (model id, tuple of patterns) pairs, each model once, each pattern a MIME "
    "pattern or TYPE@REGEX whose regular expression compiles",
    "model-id=patterns entries separated by ';', the patterns comma-separated: MIME "
    "patterns (image/png, image/*, or * for every type; nothing after = for no type) or "
    "URL patterns TYPE@REGEX (a regular expression that compiles, with \\; and \\, for "
    "; and ,), each model once",
    "my-proxy-model=image/*,audio/*;"
    r"gemini/gemini-2.5-flash=video/youtube@^https://(www\.)?youtube\.com/shorts/",
)


def _parse_cache_url(raw: str) -> str:
    if raw.partition("://")[0].lower() not in _CACHE_SCHEMES:
        raise ValueError(f"the scheme is not one of {', '.join(sorted(_CACHE_SCHEMES))}")
    if not _cache_url(raw):
        raise ValueError("no host or socket path, or a port that is not a number")
    return raw


def _cache_url(value: object) -> bool:
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    if parts.scheme.lower() == "unix":
        return bool(parts.path)
    return parts.scheme.lower() in _CACHE_SCHEMES and bool(parts.hostname)


_CACHE_SCHEMES = frozenset({"redis", "rediss", "unix"})
CACHE_URL = Kind(
    _parse_cache_url,
    _cache_url,
    "a redis://, rediss:// or unix:// URL, or None",
    "a redis://host:port/db, rediss://host:port/db or unix:///path/to/socket URL "
    "(a password in it is never shown); unset for none",
    "redis://127.0.0.1:6379/0",
    secret=True,
)
CREDENTIALS = Kind(
    credentials.parse,
    credentials.valid,
    "a tuple of Credential(origin, value), each origin once",
    "ORIGIN=HEADER-VALUE entries separated by ';', each origin an http or https "
    "scheme://host[:port] once",
    "https://files.example.com=Bearer <token>",
    secret=True,
)


def _setting(kind: Kind, doc: str) -> dict[str, Any]:
    return {"kind": kind, "doc": doc}


@dataclass(frozen=True)
class Config:
    """Limits, timeouts and the guard mode used when preparing attachments.

    Every field has a safe default and an environment variable
    ``LLM_ASYNC_ATTACHMENTS_<FIELD>`` (upper case) that overrides it; see
    [`from_env`][]. Instances are immutable: derive variants with
    ``dataclasses.replace(config, max_bytes=...)``. An invalid value raises
    ``ConfigurationError``.
    """

    max_bytes: int = field(
        default=32 * MiB,
        metadata=_setting(
            SIZE, "Largest attachment, in decoded bytes, that may be read into memory."
        ),
    )
    max_total_bytes: int = field(
        default=128 * MiB,
        metadata=_setting(
            SIZE, "Most bytes one `prepare_attachments` call may read, all attachments."
        ),
    )
    concurrency: int = field(
        default=64,
        metadata=_setting(
            COUNT,
            "URL attachments fetched at once, per event loop (and per network settings).",
        ),
    )
    host_concurrency: int = field(
        default=64,
        metadata=_setting(
            COUNT,
            "URL attachments fetched at once from one host, within `concurrency`; lower it "
            "for origins you do not run (see the configuration page on politeness).",
        ),
    )
    timeout: float = field(
        default=10.0,
        metadata=_setting(SECONDS, "Seconds to wait for a connection, or between two reads."),
    )
    deadline: float = field(
        default=60.0,
        metadata=_setting(
            SECONDS,
            "Seconds one attachment's fetch may take in all, from its first request: "
            "redirects, retries, headers and body.",
        ),
    )
    fetch_queue_timeout: float = field(
        default=300.0,
        metadata=_setting(
            SECONDS,
            "Seconds a URL fetch may wait for one of the loop's fetch slots before "
            "`AttachmentQueueTimeout`; the server is not asked until a slot is free.",
        ),
    )
    guard: GuardMode = field(
        default="raise",
        metadata=_setting(
            GUARD,
            "What a blocking sync read on an event loop does: `raise`, `strict`, `warn` or `off`.",
        ),
    )
    retries: int = field(
        default=2,
        metadata=_setting(
            RETRIES,
            "Retries of a request after a connection error or a 502/503/504, "
            "with backoff and `Retry-After`, within the deadline; 0 turns them off.",
        ),
    )
    block_private: bool = field(
        default=False,
        metadata=_setting(
            FLAG,
            "Refuse URLs that reach loopback, private, link-local and other "
            "non-public addresses, on every redirect hop (for untrusted URLs).",
        ),
    )
    allow: tuple[str, ...] = field(
        default=(),
        metadata=_setting(
            HOSTS,
            "Hosts, IP addresses and CIDR networks exempt from `block_private` "
            "(comma-separated in the environment).",
        ),
    )
    url_support: UrlTypes = field(
        default=(),
        metadata=_setting(
            URL_TYPES,
            "Which URL attachments a model sends to its API as URLs, so they are not "
            "downloaded, by model id: MIME patterns (`my-model=image/*,audio/*;other=*`) "
            "and URL patterns, `TYPE@REGEX`, whose URLs get that type with no request "
            "(`gemini/gemini-2.5-flash=video/youtube@^https://(www\\.)?youtube\\.com/shorts/`); "
            "overrides the model's own `supports_attachment_urls` and "
            "`attachment_url_patterns` and what this package knows of its plugin, and an "
            "empty list (`my-model=`) means none.",
        ),
    )
    bridge: bool = field(
        default=False,
        metadata=_setting(
            FLAG,
            "Give every sync-only model an async form that runs it on worker "
            "threads (see the bridge docs). Off by default: installing the package "
            "changes no model llm lists or returns; `bridge_model()` works either way.",
        ),
    )
    bridge_workers: int = field(
        default=512,
        metadata=_setting(
            COUNT,
            "Bridged sync prompts that run at once in the process, all models together, a "
            "thread each (about 20 KiB); more wait their turn without blocking the event loop.",
        ),
    )
    bridge_model_workers: int = field(
        default=256,
        metadata=_setting(
            COUNT,
            "Bridged sync prompts of one model that run at once, so one model cannot take "
            "every worker; sized for models that wait on the network: set 1, or the number "
            "of cores, for a local model that saturates a CPU or GPU.",
        ),
    )
    bridge_queue_timeout: float | None = field(
        default=None,
        metadata=_setting(
            SECONDS_OR_NONE,
            "Seconds a bridged prompt may wait for a worker before "
            "`BridgeQueueTimeout`; unset waits as long as it takes.",
        ),
    )

    cache_bytes: int = field(
        default=256 * MiB,
        metadata=_setting(
            SIZE,
            "Memory for prepared content and its base64 copies, the whole process: past "
            "it, least recently used content that no running model needs leaves memory.",
        ),
    )
    disk_cache_bytes: int = field(
        default=1024 * MiB,
        metadata=_setting(
            SIZE_OR_ZERO,
            "Size of the on-disk cache that URL content leaving memory is read back "
            "from without the network, one budget for every process of the machine "
            "sharing its directory (`no-store` responses are never written); 0 turns it off.",
        ),
    )
    disk_cache_dir: str | None = field(
        default=None,
        metadata=_setting(
            DIRECTORY,
            "Directory of the on-disk cache; unset: `$XDG_CACHE_HOME/llm-async-attachments` "
            "(`~/.cache/llm-async-attachments`).",
        ),
    )
    shared_cache_url: str | None = field(
        default=None,
        repr=False,  # it may hold a password
        metadata=_setting(
            CACHE_URL,
            "Redis (or Valkey) that every machine of a fleet shares URL responses through, "
            "below memory and the disk (needs the `redis` extra); unset: none. See "
            "Deploying with many workers.",
        ),
    )
    credentials: tuple[Credential, ...] = field(
        default=(),
        metadata=_setting(
            CREDENTIALS,
            "An `Authorization` value per origin (`https://files.example.com=Bearer abc`; "
            "entries separated by `;`), sent only to that scheme, host and port, never "
            "shown.",
        ),
    )
    netrc: bool = field(
        default=False,
        metadata=_setting(
            FLAG,
            "Send `~/.netrc`'s login (or `$NETRC`'s) as Basic auth to a URL's host that "
            "has no entry in `credentials`, as curl and httpx2's `NetRCAuth` read it.",
        ),
    )

    def __post_init__(self) -> None:
        for each in dataclasses.fields(self):
            value = getattr(self, each.name)
            kind = kind_of(each)
            if not kind.valid(value):
                shown = "the value given" if kind.secret else repr(value)
                raise ConfigurationError(
                    f"Config.{each.name} must be {kind.expected}, not {shown} "
                    f"(for example, {each.name}={kind.parse(kind.example)!r})",
                    setting=f"Config.{each.name}",
                    value=_HIDDEN if kind.secret else value,
                )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build a config from the defaults and ``LLM_ASYNC_ATTACHMENTS_*`` variables.

        Sizes take a number of bytes or a unit (``64MB``, ``1.5MiB``, ``2GiB``);
        durations a number of seconds or a unit (``2.5``, ``500ms``, ``2m``).
        An invalid value raises ``ConfigurationError``
        naming the variable (and any further invalid ones in its notes), rather
        than silently falling back to a default.
        """
        config, problems = _read(os.environ if environ is None else environ)
        if problems:
            raise _error(problems)
        return config


def kind_of(each: dataclasses.Field[Any]) -> Kind:
    """The :class:`Kind` of one ``Config`` field."""
    kind: Kind = each.metadata["kind"]
    return kind


def variable(name: str) -> str:
    """The environment variable of the ``Config`` field ``name``."""
    return ENV_PREFIX + name.upper()


@dataclass(frozen=True)
class _Problem:
    """One invalid environment variable: kept as text, made into a fresh error per raise."""

    variable: str
    raw: str
    message: str
    default: str
    """The default in use instead, as people read it."""


def _read(environ: Mapping[str, str]) -> tuple[Config, tuple[_Problem, ...]]:
    """The config the environment asks for, the defaults standing in for invalid values."""
    values: dict[str, Any] = {}
    problems: list[_Problem] = []
    for each in dataclasses.fields(Config):
        name = variable(each.name)
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        kind = kind_of(each)
        reason = ""
        try:
            value = kind.parse(raw)
        except ValueError as error:
            ok, reason = False, str(error)
        else:
            ok = kind.valid(value)
        if ok:
            values[each.name] = value
            continue
        # A secret's text is never repeated: the message says what is wrong with it.
        written = (
            f"{name} ({reason or 'an entry repeats an origin'})"
            if kind.secret
            else (f"{name}={raw!r}")
        )
        problems.append(
            _Problem(
                name,
                _HIDDEN if kind.secret else raw,
                f"{written} is not valid: it must be {kind.spelled}, "
                f"for example {name}={kind.example}",
                _shown(kind, each.default),
            )
        )
    return Config(**values), tuple(problems)


def _shown(kind: Kind, default: object) -> str:
    """A default as people read it: ``32 MiB``, ``10.0``, ``'raise'``."""
    if kind in (SIZE, SIZE_OR_ZERO) and isinstance(default, int):
        return human(default)
    return repr(default)


def _error(problems: tuple[_Problem, ...]) -> ConfigurationError:
    first, *others = problems
    error = ConfigurationError(first.message, setting=first.variable, value=first.raw)
    for other in others:
        error.add_note(other.message)
    return error


def _warn(problem: _Problem) -> None:
    # One line, with no source line under it: the problem is in the
    # environment, not at whichever call happened to read it first.
    warnings.warn_explicit(
        f"{problem.message}. Sync llm goes on with the default ({problem.default}); "
        "async use (async models, prepare_attachments) raises ConfigurationError "
        "until it is fixed.",
        ConfigurationWarning,
        filename="llm-async-attachments",
        lineno=0,
        module=__name__,
    )


_HIDDEN = "(hidden)"
_loading = threading.Lock()
# The process-wide config and the invalid variables behind it, swapped as one.
_state: tuple[Config, tuple[_Problem, ...]] | None = None


def _load() -> tuple[Config, tuple[_Problem, ...]]:
    global _state
    with _loading:
        state = _state
        if state is not None:
            return state
        state = _state = _read(os.environ)
    for problem in state[1]:
        _warn(problem)
    return state


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def get_config(*, strict: bool | None = None) -> Config:
    """The process-wide config: the one given to [`configure`][], else from the environment.

    The environment is read once, on first use (call ``configure(None)`` to
    read it again). An invalid ``LLM_ASYNC_ATTACHMENTS_*`` variable is
    reported then, once, with a ``ConfigurationWarning``;
    afterwards this raises ``ConfigurationError``
    if ``strict`` is true, or (``strict=None``, the default) if it is called on
    a thread running an event loop, which is async use. Otherwise, so that sync
    llm keeps working, it returns the config with the defaults in place of the
    invalid values.
    """
    state = _state or _load()
    config, problems = state
    if problems and (strict or (strict is None and _on_event_loop())):
        raise _error(problems)
    return config


def environment_problems() -> tuple[ConfigurationError, ...]:
    """One error per invalid ``LLM_ASYNC_ATTACHMENTS_*`` variable, read as [`get_config`][] does."""
    return tuple(
        ConfigurationError(problem.message, setting=problem.variable, value=problem.raw)
        for problem in (_state or _load())[1]
    )


def configure(config: Config | None) -> None:
    """Set the process-wide config (``None``: re-read the environment on next use)."""
    global _state
    _state = None if config is None else (config, ())
