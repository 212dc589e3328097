"""Which URL attachments a model takes as URLs: the user's word, the model's, else ours.

In order of precedence:

1. ``Config.url_support`` (``LLM_ASYNC_ATTACHMENTS_URL_SUPPORT``), by model id,
   its MIME patterns and its ``TYPE@REGEX`` URL patterns: the user knows their
   proxy or local server best, both ways;
2. the model's own ``supports_attachment_urls``: ``True`` (every type), or
   MIME patterns such as ``{"image/*"}``; and its ``attachment_url_patterns``;
3. :data:`KNOWN_URL_SUPPORT`, what plugins that predate the attribute really
   do, read from their source;
4. ``False``: every URL is fetched and inlined, which is always safe.

A known declaration names the class *and* the methods that build the
attachment payload. It holds for a subclass only while the subclass leaves
those methods alone: one that overrides them may inline what its parent sent
as a URL, so it gets no declaration (``False``) rather than a wrong one.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..url_support_setting import UrlTypes, url_pattern

__all__ = [
    "KNOWN_URL_SUPPORT",
    "UrlDeclaration",
    "known_declaration",
    "known_url_support",
    "url_patterns",
    "url_support",
]

_ABSENT = object()


@dataclass(frozen=True)
class UrlDeclaration:
    """One plugin class, the methods that build its attachment payload, the types sent as URLs.

    ``methods`` are compared by identity: a model of the class, or of a
    subclass, is covered only if each resolves to the very function the
    declared class has (or, for a helper some versions of the plugin lack,
    to nothing on both). At least one must exist on the declared class.
    """

    cls: str
    """The class, as ``module.QualName``; matched in a model's MRO without importing it."""
    methods: tuple[str, ...]
    """The methods whose code puts attachments into the request."""
    types: frozenset[str]
    """MIME patterns whose URL attachments those methods send as URLs."""
    url_types: UrlTypes = ()
    r"""URLs those methods send as they are, as a type of their own, by regular expression:
    ``(("video/youtube", (r"^https://youtu\.be/",)),)``. Known without any request."""

    def covers(self, model: Any, declared: type) -> bool:
        """Whether ``model``, an instance of ``declared`` or a subclass, builds payloads as read."""
        present = False
        for name in self.methods:
            expected = inspect.getattr_static(declared, name, _ABSENT)
            present = present or expected is not _ABSENT
            if inspect.getattr_static(model, name, _ABSENT) is not expected:
                return False
        return present


def _declare(
    cls: str, methods: tuple[str, ...], *types: str, url_types: UrlTypes = ()
) -> UrlDeclaration:
    return UrlDeclaration(cls, methods, frozenset(types), url_types)


_LLM = "llm.default_plugins.openai_models"
_LLM_CHAT = ("build_messages", "_append_llm_message")
_MISTRAL = ("build_messages", "_content_from_parts")

KNOWN_URL_SUPPORT: tuple[UrlDeclaration, ...] = (
    # llm's OpenAI plugin, Chat Completions (gpt-4o, gpt-4.1, ...), read in llm 0.30
    # and 0.36: _Shared.build_messages (0.36: through _append_llm_message) calls
    # _attachment(), which sends an image URL as image_url.url; audio becomes an
    # inlined input_audio and PDF an inlined file part. llm-openrouter's chat classes
    # (OpenRouterChat, OpenRouterAsyncChat: (_mixin, Chat), read in 0.6 and 0.7.1) and
    # llm-llama-server 0.2 subclass these without overriding either method, so they
    # are covered too.
    _declare(f"{_LLM}.Chat", _LLM_CHAT, "image/*"),
    _declare(f"{_LLM}.AsyncChat", _LLM_CHAT, "image/*"),
    # llm >= 0.32, Responses API (o-series, gpt-5), read in 0.32 and 0.36:
    # _SharedResponses._build_responses_input calls _responses_attachment(), which
    # sends an image URL as input_image.image_url; PDF becomes an inlined input_file
    # and audio an inlined data: URL.
    _declare(f"{_LLM}.Responses", ("_build_responses_input",), "image/*"),
    _declare(f"{_LLM}.AsyncResponses", ("_build_responses_input",), "image/*"),
    # llm-openrouter >= 0.7 registers these (0.6 and earlier, the chat classes above),
    # read in 0.7 and 0.7.1: (_mixin, Responses). _mixin._build_responses_input, which
    # overrides llm's, replays OpenRouter's server-tool items and hands every other
    # part, attachments included, to llm's _build_responses_input (above): image URLs
    # go as input_image.image_url. With the chat_completions option, execute() runs
    # OpenRouterChat or OpenRouterAsyncChat instead, which sends them as image_url.url.
    _declare("llm_openrouter.OpenRouterResponses", ("_build_responses_input",), "image/*"),
    _declare("llm_openrouter.OpenRouterAsyncResponses", ("_build_responses_input",), "image/*"),
    # llm-mistral, read in 0.15 and 0.16: _Shared.build_messages builds the content;
    # 0.15 through the module's _build_message_content(), 0.16 through
    # _Shared._content_from_parts and the module's _attachment_chunk(). Both send
    # audio as input_audio with attachment.url (0.15 refuses audio without a URL)
    # and every other type as image_url with attachment.url; only attachments
    # without a URL are inlined as base64. 0.10 to 0.14 (checked) do the same
    # inside build_messages, for images, and take no audio.
    _declare("llm_mistral.Mistral", _MISTRAL, "image/*", "audio/*"),
    _declare("llm_mistral.AsyncMistral", _MISTRAL, "image/*", "audio/*"),
    # llm-openai-plugin (models openai/...), read in 0.7, checked in 0.2 to 0.6:
    # _SharedResponses._build_messages calls the module's _attachment(), which sends
    # an image URL as input_image.image_url; PDF becomes an inlined input_file and
    # audio an inlined input_audio. 0.1 has no _build_messages, so is not covered.
    _declare("llm_openai.ResponsesModel", ("_build_messages",), "image/*"),
    _declare("llm_openai.AsyncResponsesModel", ("_build_messages",), "image/*"),
    # llm-gemini, read in 0.35: _SharedGemini.build_messages gives each attachment the
    # type of the module's resolve_type(), "video/youtube" for a YouTube URL (its
    # is_youtube_url() patterns, below), and _build_attachment_part sends that as
    # fileData.fileUri, the URL as it is; every other attachment is inlined as base64.
    # llm alone resolves the type first, with a HEAD to YouTube that answers text/html,
    # and llm's own check then refuses the attachment (llm-gemini issue 62).
    _declare(
        "llm_gemini._SharedGemini",
        ("build_messages", "_build_attachment_part"),
        url_types=(
            (
                "video/youtube",
                (
                    r"^https?://(www\.)?youtube\.com/watch\?v=",
                    r"^https?://youtu\.be/",
                    r"^https?://(www\.)?youtube\.com/embed/",
                ),
            ),
        ),
    ),
)


_BY_CLASS = {declaration.cls: declaration for declaration in KNOWN_URL_SUPPORT}


def known_url_support(model: Any) -> frozenset[str] | None:
    """What :data:`KNOWN_URL_SUPPORT` says ``model`` takes as URLs; ``None`` if it says nothing."""
    declaration = known_declaration(model)
    return None if declaration is None else declaration.types


def known_declaration(model: Any) -> UrlDeclaration | None:
    """The declaration of :data:`KNOWN_URL_SUPPORT` that covers ``model``, if any.

    The nearest declared class in the model's MRO decides: if the model
    overrides its payload methods, the answer is ``None``, not a parent's.
    The answer is remembered per class (it is asked for every prompt), except
    for a model whose instance has any of the payload methods set on it.
    """
    kind = type(model)
    if not _METHODS.intersection(getattr(model, "__dict__", ())):
        known = _by_type.get(kind, _ABSENT)
        if known is _ABSENT:
            known = _by_type[kind] = _known(model)
        return known  # type: ignore[return-value]
    return _known(model)


_METHODS = frozenset(name for declaration in KNOWN_URL_SUPPORT for name in declaration.methods)
_by_type: dict[type, UrlDeclaration | None] = {}


def _known(model: Any) -> UrlDeclaration | None:
    for cls in type(model).__mro__:
        declaration = _BY_CLASS.get(f"{cls.__module__}.{cls.__qualname__}")
        if declaration is not None:
            return declaration if declaration.covers(model, cls) else None
    return None


def url_support(model: Any, config: Config) -> bool | str | Collection[str]:
    """Which URL attachments ``model`` takes as URLs, as :class:`UrlPolicy` reads it.

    ``config.url_support``'s MIME patterns for the model's id if it has an
    entry (``*`` meaning every type, none meaning none), else
    ``model.supports_attachment_urls`` if it says, else
    :data:`KNOWN_URL_SUPPORT`, else ``False``: every URL is fetched and
    inlined, which is always safe.
    """
    configured = _configured(model, config)
    if configured is not None:
        types = [pattern for pattern in configured if url_pattern(pattern) is None]
        return True if "*" in types else frozenset(types)
    declared: bool | str | Collection[str] | None = getattr(model, "supports_attachment_urls", None)
    if declared is not None:
        return declared
    known = known_url_support(model)
    return False if known is None else known


def url_patterns(model: Any, config: Config) -> UrlTypes:
    """The URLs ``model`` sends on as they are, as a type of their own, by pattern:
    ``config.url_support``'s ``TYPE@REGEX`` patterns for the model's id if it has an
    entry (none meaning none), else its own ``attachment_url_patterns`` (a mapping of
    type to regular expressions) if it has any, else :data:`KNOWN_URL_SUPPORT`'s."""
    configured = _configured(model, config)
    if configured is not None:
        typed = (url_pattern(pattern) for pattern in configured)
        return tuple((kind, (regex,)) for kind, regex in filter(None, typed))
    declared = getattr(model, "attachment_url_patterns", None)
    if declared:
        return tuple((kind, tuple(patterns)) for kind, patterns in declared.items())
    declaration = known_declaration(model)
    return () if declaration is None else declaration.url_types


def _configured(model: Any, config: Config) -> tuple[str, ...] | None:
    """``config.url_support``'s patterns for the model's id; ``None`` if it has no entry."""
    model_id = getattr(model, "model_id", None)
    for configured_id, patterns in config.url_support:
        if configured_id == model_id:
            return patterns
    return None
