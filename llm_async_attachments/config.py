"""One immutable configuration object, its defaults and its environment overrides."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

__all__ = ["Config", "GuardMode", "configure", "get_config"]

GuardMode = Literal["raise", "strict", "warn", "off"]

MiB = 1024 * 1024
ENV_PREFIX = "LLM_ASYNC_ATTACHMENTS_"


@dataclass(frozen=True)
class Config:
    """Limits, timeouts and the guard mode used when preparing attachments.

    Every field has a safe default and an environment variable
    ``LLM_ASYNC_ATTACHMENTS_<FIELD>`` (upper case) that overrides it; see
    :meth:`from_env`. Instances are immutable: derive variants with
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
        metadata={"doc": "Seconds one attachment may take in all: redirects, headers, body."},
    )
    guard: GuardMode = field(
        default="raise",
        metadata={
            "doc": "What a blocking sync read on an event loop does: "
            "`raise`, `strict`, `warn` or `off`."
        },
    )

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_total_bytes", "concurrency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Config.{name} must be a positive integer, not {value!r}")
        for name in ("timeout", "deadline"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"Config.{name} must be a positive number, not {value!r}")
        if self.guard not in get_args(GuardMode):
            choices = ", ".join(get_args(GuardMode))
            raise ValueError(f"Config.guard must be one of {choices}, not {self.guard!r}")

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
            try:
                values[each.name] = _PARSERS[each.name](raw)
            except ValueError as exc:
                raise ValueError(f"{name}={raw!r} is not valid: {exc}") from None
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"{exc} (from {ENV_PREFIX}* environment variables)") from None


_UNITS = {"kib": 1024, "mib": MiB, "gib": 1024 * MiB, "b": 1}


def _parse_size(raw: str) -> int:
    text = raw.lower().replace(" ", "")
    for suffix, factor in _UNITS.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


def _parse_guard(raw: str) -> str:
    return raw.lower()


_PARSERS = {
    "max_bytes": _parse_size,
    "max_total_bytes": _parse_size,
    "concurrency": int,
    "timeout": float,
    "deadline": float,
    "guard": _parse_guard,
}

_active: Config | None = None


def get_config() -> Config:
    """The process-wide config: the one given to :func:`configure`, else from the environment.

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
