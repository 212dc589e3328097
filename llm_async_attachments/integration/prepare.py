"""prepare_attachments: every attachment of a prompt and its conversation, prepared
for one model.

The llm side of preparing: it finds the attachments (``history``), places
each as the prompt's own or the history's, and makes the engine's plan from
what the model declares (``url_support``) and was seen to read
(``learned_reads``). The engine (``core.prepare``) does the rest.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any

from ..caps import Progress
from ..config import Config, get_config
from ..core import prepare as engine
from ..core.needs import Place
from ..core.plan import Plan, UrlPolicy
from ..core.prepare import PrepareSummary
from ..store.memory import Lease
from .history import collect
from .install import install
from .learned_reads import model_key, need
from .url_support import url_patterns, url_support

__all__ = ["plan_for", "prepare_attachments", "prepare_for"]


async def prepare_attachments(
    prompt: Any,
    conversation: Any = None,
    *,
    model: Any = None,
    config: Config | None = None,
    progress: Progress | None = None,
) -> PrepareSummary:
    """Make every attachment of a prompt readable without I/O, fetching what is missing.

    Finds the attachments of ``prompt`` (its attachments, tool results and
    message parts) and of every earlier response in ``conversation``
    (including attachments that responses produced), then, concurrently:

    * resolves each missing type: an explicit ``type`` wins; paths and bytes
      are sniffed as llm does; a URL matching one of the model's URL patterns
      (``attachment_url_patterns``, or ``url_support`` in the configuration)
      gets that pattern's type with no request;
      other URLs by ``HEAD``, or from the ``GET`` that fetches their content;
      ``data:`` URLs are decoded where they are;
    * reads the content of paths and URLs, within ``config.max_bytes`` per
      attachment and ``config.max_total_bytes`` for the call; except that
      content is not read for types the model takes as URLs (see
      ``url_support`` in the configuration), for a prompt's attachments of
      types the model does not accept (llm refuses those on their type), and
      for kinds of attachments the model was seen not to read (``model``
      defaults to ``prompt.model``).

    What it prepared stays prepared for as long as ``prompt`` lives: its sync
    ``resolve_type()``, ``content_bytes()``, ``base64_content()`` and ``id()``
    then do no I/O, whatever the memory budget (``config.cache_bytes``) and
    whatever the responses' ``Cache-Control`` (``no-store`` content is held
    for this prompt only: never shared, never written to disk). The budget
    bounds what is kept beyond the prompts that hold content: URL responses
    are shared between attachment objects as HTTP's caching rules allow, so
    preparing again (the next turn) fetches nothing. A cached
    result serves a later call only if that call's ``config`` could have
    produced it: content over its ``max_bytes`` raises
    [`AttachmentTooLarge`][] without a fetch, and a URL fetched with
    ``block_private`` off is fetched again for a call that has it on. The
    first attachment to fail raises its [`AttachmentError`][] and cancels
    the rest (failures at the same moment are added to it as notes); the
    exception is this call's own object, never one another call raises too.

    ``progress``, for a progress display such as ``llm async-attachments
    fetch``'s, is called on the event loop (keep it quick) as each URL body
    this call downloads arrives: with the attachment's URL (credentials
    redacted), the bytes received so far and the ``Content-Length`` they will
    reach (``None`` if the server sent none), both as sent on the wire, before
    decompression. A body another call is already downloading, or that comes
    from the cache, is not reported.
    """
    install()  # so that llm.Attachment's sync reads find what this prepares
    lease = Lease(0)
    model = model or getattr(prompt, "model", None)
    try:
        summary, _placed = await prepare_for(
            prompt, conversation, lambda: plan_for(model, config), lease, progress
        )
    except BaseException:
        lease.release()
        raise
    _hold_while_alive(prompt, lease)
    return summary


def _hold_while_alive(prompt: Any, lease: Lease) -> None:
    """What ``lease`` holds stays in memory until ``prompt`` is collected (at once if it
    cannot be referenced weakly: then its content is under the budget like any other)."""
    try:
        weakref.finalize(prompt, lease.release)
    except TypeError:
        lease.release()


async def prepare_for(
    prompt: Any,
    conversation: Any,
    planned: Callable[[], Plan],
    lease: Lease,
    progress: Progress | None = None,
) -> tuple[PrepareSummary, list[tuple[Any, Place]]]:
    """:func:`prepare_attachments` as the hook runs it: what was prepared is held by
    ``lease`` (the model's ``execute()`` reads it), and each attachment found is
    returned with its place, the prompt's own or the history's. ``planned()``
    makes the plan, only if there is an attachment to plan for."""
    started = time.perf_counter()
    found = collect(prompt, conversation)
    if not found:
        return PrepareSummary(0, 0, 0, 0, time.perf_counter() - started), []
    own = {id(attachment) for attachment in _own_attachments(prompt)}
    placed: list[tuple[Any, Place]] = [
        (attachment, "prompt" if id(attachment) in own else "history") for attachment in found
    ]
    summary = await engine.prepare(placed, planned(), lease, started=started, progress=progress)
    return summary, placed


def _own_attachments(prompt: Any) -> list[Any]:
    own = list(getattr(prompt, "attachments", None) or ())
    for result in getattr(prompt, "tool_results", None) or ():
        own.extend(getattr(result, "attachments", None) or ())
    return own


def plan_for(model: Any, config: Config | None = None) -> Plan:
    """The plan for preparing ``model``'s attachments, from what it declares and was
    seen to read (``model=None``: everything, every URL fetched)."""
    config = config or get_config()
    if model is None:
        return Plan(config, UrlPolicy(False))
    name = model_key(model)
    types = getattr(model, "attachment_types", None)
    return Plan(
        config,
        UrlPolicy(url_support(model, config), url_patterns(model, config)),
        learned=lambda content_type, place: need(name, content_type, place),
        accepted=frozenset(types) if types else None,
    )
