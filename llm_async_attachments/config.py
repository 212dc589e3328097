"""One immutable configuration object, its defaults and its environment overrides."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

__all__ = ["Config", "GuardMode", "configure", "get_config"]

GuardMode = Literal["raise", "strict", "warn", "off"]

MiB = 1024 * 1024
ENV_PREFIX = "LLM_ASYNC_ATTACHMENTS_"


@dataclass(frozen=True)
class Config:
    """Limits, timeouts and the guard mode used when preparing attachments.

    Every field has a safe default and an environment variable
    ``LLM_ASYNC_ATTACHMENTS_<FIELD>`` (upper case) that overrides it; see
    [`from_env`][]. Instances are immutable: derive variants with
    ``dataclasses.replace(config, max_bytes=...)``.
    """

    max_bytes: int = field(
        default=32 * MiB,
        metadata={"doc": "Largest attachment, in decoded bytes, that may be read into memory."},
    )
    max_total_bytes: int = field(
        default=128 * MiB,
        metadata={"doc": "Most bytes one `prepare_attachments` call may read, all attachments."},
    )
    concurrency: int = field(
        default=8, metadata={"doc": "URL attachments fetched at once, per event loop."}
    )
    timeout: float = field(
        default=10.0,
        metadata={"doc": "Seconds to wait for a connection, or between two reads."},
    )
    deadline: float = field(
        default=60.0,
        metadata={
            "doc": "Seconds one attachment's fetch may take in all, from its first request: "
            "redirects, retries, headers and body."
        },
    )
    fetch_queue_timeout: float = field(
        default=300.0,
        metadata={
            "doc": "Seconds a URL fetch may wait for one of the loop's fetch slots before "
            "`AttachmentQueueTimeout`; the server is not asked until a slot is free."
        },
    )
    guard: GuardMode = field(
        default="raise",
        metadata={
            "doc": "What a blocking sync read on an event loop does: "
            "`raise`, `strict`, `warn` or `off`."
        },
    )
    retries: int = field(
        default=2,
        metadata={
            "doc": "Retries of a request after a connection error or a 502/503/504, "
            "with backoff and `Retry-After`, within the deadline; 0 turns them off."
        },
    )
    block_private: bool = field(
        default=False,
        metadata={
            "doc": "Refuse URLs that reach loopback, private, link-local and other "
            "non-public addresses, on every redirect hop (for untrusted URLs)."
        },
    )
    allow: tuple[str, ...] = field(
        default=(),
        metadata={
            "doc": "Hosts, IP addresses and CIDR networks exempt from `block_private` "
            "(comma-separated in the environment)."
        },
    )
    bridge: bool = field(
        default=True,
        metadata={
            "doc": "Give every sync-only model an async form that runs it on worker "
            "threads (see the bridge docs); off leaves sync-only models sync-only."
        },
    )
    bridge_workers: int = field(
        default=512,
        metadata={
            "doc": "Bridged sync prompts that run at once in the process, all models "
            "together, a thread each (about 20 KiB); more wait their turn without blocking "
            "the event loop."
        },
    )
    bridge_model_workers: int = field(
        default=256,
        metadata={
            "doc": "Bridged sync prompts of one model that run at once, so one model "
            "cannot take every worker; sized for models that wait on the network: set 1, "
            "or the number of cores, for a local model that saturates a CPU or GPU."
        },
    )
    bridge_queue_timeout: float | None = field(
        default=None,
        metadata={
            "doc": "Seconds a bridged prompt may wait for a worker before "
            "`BridgeQueueTimeout`; unset waits as long as it takes."
        },
    )

    def __post_init__(self) -> None:
        for each in dataclasses.fields(self):
            value = getattr(self, each.name)
            valid, expected = _RULES[each.name]
            if not valid(value):
                raise ValueError(f"Config.{each.name} must be {expected}, not {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build a config from the defaults and ``LLM_ASYNC_ATTACHMENTS_*`` variables.

        Sizes accept a plain number of bytes or a ``KiB``/``MiB``/``GiB`` suffix
        (``64MiB``). A malformed value raises ``ValueError`` naming the variable,
        rather than silently falling back to a default.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for each in dataclasses.fields(cls):
            name = ENV_PREFIX + each.name.upper()
            raw = environ.get(name, "").strip()
            if not raw:
                continue
            valid, expected = _RULES[each.name]
            try:
                value = _PARSERS[each.name](raw)
            except ValueError as exc:
                raise ValueError(f"{name}={raw!r} is not valid: {exc}") from None
            if not valid(value):
                raise ValueError(f"{name}={raw!r} is not valid: it must be {expected}")
            values[each.name] = value
        return cls(**values)  # type: ignore[arg-type]


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _positive_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _host_list(value: Any) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(entry, str) and entry.strip() and " " not in entry.strip() for entry in value
    )


_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_bytes": (_positive_int, "a positive integer"),
    "max_total_bytes": (_positive_int, "a positive integer"),
    "concurrency": (_positive_int, "a positive integer"),
    "timeout": (_positive_number, "a positive number"),
    "deadline": (_positive_number, "a positive number"),
    "fetch_queue_timeout": (_positive_number, "a positive number"),
    "guard": (lambda value: value in get_args(GuardMode), "one of raise, strict, warn, off"),
    "retries": (
        lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= 0,
        "0 or more",
    ),
    "block_private": (lambda value: isinstance(value, bool), "True or False"),
    "allow": (_host_list, "a tuple of host names, addresses or networks"),
    "bridge": (lambda value: isinstance(value, bool), "True or False"),
    "bridge_workers": (_positive_int, "a positive integer"),
    "bridge_model_workers": (_positive_int, "a positive integer"),
    "bridge_queue_timeout": (
        lambda value: value is None or _positive_number(value),
        "a positive number or None",
    ),
}

_UNITS = {"kib": 1024, "mib": MiB, "gib": 1024 * MiB, "b": 1}


def _parse_size(raw: str) -> int:
    text = raw.lower().replace(" ", "")
    for suffix, factor in _UNITS.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


def _parse_guard(raw: str) -> str:
    return raw.lower()


def _parse_bool(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(entry.strip() for entry in raw.split(",") if entry.strip())


_PARSERS = {
    "max_bytes": _parse_size,
    "max_total_bytes": _parse_size,
    "concurrency": int,
    "timeout": float,
    "deadline": float,
    "fetch_queue_timeout": float,
    "guard": _parse_guard,
    "retries": int,
    "block_private": _parse_bool,
    "allow": _parse_list,
    "bridge": _parse_bool,
    "bridge_workers": int,
    "bridge_model_workers": int,
    "bridge_queue_timeout": float,
}

_active: Config | None = None


def get_config() -> Config:
    """The process-wide config: the one given to [`configure`][], else from the environment.

    The environment is read once, on first use; call ``configure(None)`` to
    read it again.
    """
    global _active
    if _active is None:
        _active = Config.from_env()
    return _active


def configure(config: Config | None) -> None:
    """Set the process-wide config (``None``: re-read the environment on next use)."""
    global _active
    _active = config
