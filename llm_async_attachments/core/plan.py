"""What to prepare of each attachment: the plan one prepare call follows.

The engine knows no models: whoever calls it (the llm integration) turns what
a model declares, and what it was seen to read, into a :class:`Plan`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

from .. import mime
from .needs import EVERYTHING, Need, Place

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["Plan", "UrlPolicy"]


class UrlPolicy:
    r"""A model's ``supports_attachment_urls``: which URL attachments it takes as URLs.

    ``True`` means every type, a string or collection of MIME patterns
    (``"image/*"``, ``"application/pdf"``) means those types, and anything
    false means none: their content is fetched and inlined.

    ``typed``: URLs the model takes as they are, as a type of their own, by
    regular expression (``[("video/youtube", [r"^https://youtu\.be/"])]``): their
    type is known without any request, and they are never fetched.
    """

    def __init__(
        self,
        declared: bool | str | Collection[str] | None,
        typed: Iterable[tuple[str, Iterable[str]]] = (),
    ) -> None:
        self.everything = declared is True
        if isinstance(declared, bool) or not declared:
            self.patterns: tuple[str, ...] = ()
        elif isinstance(declared, str):
            self.patterns = (declared,)
        else:
            self.patterns = tuple(declared)
        self.typed = tuple((re.compile(p), kind) for kind, patterns in typed for p in patterns)

    def type_of(self, url: str) -> str | None:
        """The type a URL matching one of the ``typed`` patterns is sent as, else ``None``."""
        for pattern, kind in self.typed:
            if pattern.match(url):
                return kind
        return None

    def accepts(self, content_type: str | None) -> bool:
        """Whether a URL attachment of this type goes to the model without its content."""
        return self.everything or mime.matches(content_type, self.patterns)


class Plan:
    """What to prepare of each attachment, for one model (nothing here knows models:
    the caller hands in what the model declares and was seen to read).

    ``urls``: the types the model takes as URLs, whose content is not fetched.
    ``learned(type, place)``: what the model was seen to read of that kind of
    attachment, ``None`` if never seen (then everything is prepared).
    ``accepted``: the types the model accepts (``None``: any); a URL or file of
    another type is refused from its headers or head, before its body is read.
    ``everything``: prepare content whatever was learned (``AsyncAttachment``).
    """

    def __init__(
        self,
        config: Config,
        urls: UrlPolicy,
        *,
        learned: Callable[[str | None, Place], Need | None] | None = None,
        accepted: frozenset[str] | None = None,
        everything: bool = True,
    ) -> None:
        self.config = config
        self.urls = urls
        self._learned = learned
        self._accepted = accepted
        self._everything = everything and learned is None

    def _need(self, content_type: str | None, place: Place) -> Need:
        learned = self._learned
        if learned is None:
            return EVERYTHING if self._everything else _TYPE_ONLY
        # A kind never seen in the history is read there as it is in prompts, if
        # that is known (a model that skips a prompt's PDFs skips earlier ones too).
        found = learned(content_type, place)
        if found is None and place == "history":
            found = learned(content_type, "prompt")
        return found or EVERYTHING

    def may_want_content(self) -> bool:
        """Whether a URL of a type not known yet may be wanted whole (else: ``HEAD``)."""
        return not self.urls.everything and (self._learned is not None or self._everything)

    def sent_as_url(self, attachment: Any, content_type: str | None) -> bool:
        """Whether ``attachment`` goes to the model as its URL, its content unfetched."""
        url = attachment.url
        return bool(url) and (self.urls.accepts(content_type) or self.urls.type_of(url) is not None)

    @property
    def refuses_some(self) -> bool:
        """Whether the model takes only some types of attachments."""
        return self._accepted is not None

    def accepts(self, content_type: str | None) -> bool:
        """Whether the model takes attachments of this type at all."""
        return self._accepted is None or content_type in self._accepted

    def wants_content(self, content_type: str | None, place: Place, *, url: bool) -> bool:
        """Whether this attachment's content should be in memory for the model."""
        if url and self.urls.accepts(content_type):
            return False
        if place == "prompt" and not self.accepts(content_type):
            return False  # refused by llm's own check: its body is never read
        return self._need(content_type, place).content

    def wants_base64(self, content_type: str | None, place: Place) -> bool:
        """Whether large content should also be encoded as base64 ahead of the model."""
        return self._need(content_type, place).base64


_TYPE_ONLY = Need(content=False, base64=False)
