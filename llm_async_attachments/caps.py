"""Byte accounting for one prepare call: a cap per attachment and one for the call."""

from __future__ import annotations

from collections.abc import Callable

from .errors import AttachmentsTotalTooLarge, AttachmentTooLarge

Progress = Callable[[str, int, int | None], None]
"""Told of a URL's body as it arrives: the attachment (credentials redacted), the bytes
received so far, and the ``Content-Length`` they will reach (``None`` if not sent); both
as sent on the wire, before decompression."""

_PER_ITEM_FIX = (
    "If you trust this source, raise LLM_ASYNC_ATTACHMENTS_MAX_BYTES "
    "(Config.max_bytes); otherwise send a smaller file."
)
_TOTAL_FIX = (
    "Send fewer or smaller attachments, or raise LLM_ASYNC_ATTACHMENTS_MAX_TOTAL_BYTES "
    "(Config.max_total_bytes)."
)


def human(size: int) -> str:
    """``33554432`` -> ``32 MiB``; exact for the round numbers limits usually are."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            value = size / factor
            return f"{int(value)} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


class Budget:
    """The bytes one prepare call may still read, shared by all its attachments."""

    def __init__(self, max_bytes: int, max_total_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_total_bytes = max_total_bytes
        self.used = 0

    def meter(self, source: str) -> Meter:
        """A counter for one attachment's bytes, charged against this budget."""
        return Meter(self, source)


class Meter:
    """Counts one attachment's decoded bytes and raises the moment a limit is passed."""

    def __init__(self, budget: Budget, source: str) -> None:
        self._budget = budget
        self.source = source
        self.count = 0

    @property
    def limit(self) -> int:
        """The most bytes this one attachment may have."""
        return self._budget.max_bytes

    @property
    def room(self) -> int:
        """How many more bytes this attachment may have before a limit is passed."""
        budget = self._budget
        return min(budget.max_bytes - self.count, budget.max_total_bytes - budget.used)

    def declare(self, size: int | None, what: str) -> None:
        """Refuse up front when a declared size (``Content-Length``, file size) is too big."""
        if size is None:
            return
        budget = self._budget
        if size > budget.max_bytes:
            raise AttachmentTooLarge(
                f"Attachment {self.source} is too large: its {what} is {size} bytes "
                f"({human(size)}), over the limit of {human(budget.max_bytes)} per "
                f"attachment. Nothing was read. {_PER_ITEM_FIX}",
                source=self.source,
                limit=budget.max_bytes,
                size=size,
            )
        if size > budget.max_total_bytes - budget.used:
            self._total_error(size, f"its {what} of {human(size)}")

    def add(self, n: int) -> None:
        """Charge ``n`` more bytes; raise as soon as either limit is passed."""
        budget = self._budget
        self.count += n
        budget.used += n
        if self.count > budget.max_bytes:
            raise AttachmentTooLarge(
                f"Attachment {self.source} is too large: reading stopped after "
                f"{self.count} bytes, over the limit of {human(budget.max_bytes)} per "
                f"attachment (the size was not declared, or was declared wrongly). "
                f"{_PER_ITEM_FIX}",
                source=self.source,
                limit=budget.max_bytes,
                size=None,
            )
        if budget.used > budget.max_total_bytes:
            self._total_error(None, f"{human(self.count)} read from it")

    def _total_error(self, size: int | None, detail: str) -> None:
        budget = self._budget
        raise AttachmentsTotalTooLarge(
            f"Attachment {self.source} would take this prepare call over its total "
            f"limit of {human(budget.max_total_bytes)} ({detail}, after "
            f"{human(budget.used - self.count)} for other attachments). {_TOTAL_FIX}",
            source=self.source,
            limit=budget.max_total_bytes,
            size=size,
        )
