"""Which URL attachments a model takes as URLs: its own declaration, else ours.

A model declares ``supports_attachment_urls``: ``True`` (every type), or MIME
patterns such as ``{"image/*"}``. For models that predate the attribute, the
table below holds what their plugin really does, read from its source.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

__all__ = ["KNOWN_URL_SUPPORT", "url_support"]

KNOWN_URL_SUPPORT: dict[str, bool | frozenset[str]] = {
    # llm's OpenAI plugin, Chat Completions (gpt-4o, gpt-4.1, ...): _attachment()
    # sends an image URL as image_url.url; audio becomes input_audio and PDF a
    # file part, both inlined as base64.
    "llm.default_plugins.openai_models.Chat": frozenset({"image/*"}),
    "llm.default_plugins.openai_models.AsyncChat": frozenset({"image/*"}),
    # llm >= 0.36, Responses API (o-series, gpt-5): _responses_attachment()
    # sends an image URL as input_image.image_url; PDF becomes an inlined
    # input_file and audio an inlined data: URL.
    "llm.default_plugins.openai_models.Responses": frozenset({"image/*"}),
    "llm.default_plugins.openai_models.AsyncResponses": frozenset({"image/*"}),
}


def url_support(model: Any) -> bool | str | Collection[str]:
    """``model.supports_attachment_urls`` if it says, else :data:`KNOWN_URL_SUPPORT`.

    Undeclared and unknown models get ``False``: every URL is fetched and
    inlined, which is always safe.
    """
    declared: bool | str | Collection[str] | None = getattr(model, "supports_attachment_urls", None)
    if declared is not None:
        return declared
    for cls in type(model).__mro__:
        known = KNOWN_URL_SUPPORT.get(f"{cls.__module__}.{cls.__qualname__}")
        if known is not None:
            return known
    return False
