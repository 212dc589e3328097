"""What a model needs of an attachment, and where the attachment was found.

The words the integration (which learns what each model reads) and the
engine (which prepares it) share; light enough to load with llm's plugins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["EVERYTHING", "Need", "Place"]

Place = Literal["prompt", "history"]
"""Where an attachment was found: the prompt's own, or an earlier turn's."""


@dataclass(frozen=True)
class Need:
    """What to prepare of one attachment beyond its type."""

    content: bool
    base64: bool


EVERYTHING = Need(content=True, base64=True)
