"""Preparing attachments before an async model's ``execute()`` runs.

:func:`prepare_before_execute` changes one async model instance (or class) so
that every response it runs first awaits :func:`prepare_attachments` for the
prompt and its conversation, then runs the model's own ``execute()`` inside
the guard's "async model execution" context. The llm plugin applies it to
the class of every async model registered with llm; anyone can apply it to
another model or class.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any, TypeVar

import llm

from ..core.needs import Place
from ..core.plan import Plan
from ..store.memory import Lease
from ..store.state import UNSET, peek, state_of
from . import guard, learned_reads, llm_internals
from .install import install, standing_down
from .learned_reads import Execution, model_key
from .prepare import plan_for, prepare_for
from .views import Views

__all__ = ["prepare_before_execute", "prepares_attachments"]

M = TypeVar("M")
_MARK = "_llm_async_attachments_prepares"
# (model, prompt) pairs whose execute() is running under one of our wrappers:
# a second wrapper around the same model (another plugin's re-wrap) must not
# prepare again.
_running: ContextVar[frozenset[tuple[int, int]]] = ContextVar(
    "llm_async_attachments_running", default=frozenset()
)
_VALIDATE = llm_internals.VALIDATE_ATTACHMENTS


def prepare_before_execute(target: M) -> M:
    """Make an async model, or an async model class, prepare attachments first.

    For an instance (``model = prepare_before_execute(MyAsyncModel())``) the
    model stays an instance of its own class with all its attributes; only
    its ``execute`` and ``_validate_attachments`` are wrapped. As a class
    decorator it wraps the methods of the class. Applying it twice is
    harmless: it returns the target unchanged. Sync models are refused with
    ``TypeError``: they do not run on an event loop. Installs the guard
    (see [`install`][llm_async_attachments.install]); if the package stands
    down (llm changed under it), returns the target unchanged.
    """
    install()
    kinds = (llm.AsyncModel, llm.AsyncKeyModel)
    if isinstance(target, type):
        if not issubclass(target, kinds):
            raise TypeError(f"{target.__name__} is not an llm async model class")
    elif not isinstance(target, kinds):
        raise TypeError(f"{target!r} is not an llm async model")
    if prepares_attachments(target) or standing_down() is not None:
        return target
    if isinstance(target, type):
        _wrap_class(target)
    else:
        _wrap_instance(target)
    return target


def prepares_attachments(target: Any) -> bool:
    """Whether ``target`` (an async model or its class) prepares attachments before it runs."""
    return bool(getattr(target.execute, _MARK, False))


def _wrap_class(target: Any) -> None:
    execute, validate = target.execute, getattr(target, _VALIDATE)

    @functools.wraps(execute)
    def execute_method(self: Any, prompt: Any, *args: Any, **kwargs: Any) -> Any:
        run = functools.partial(execute, self)
        checks = functools.partial(validate, self)
        return _prepared(self, run, checks, prompt, args, kwargs)

    @functools.wraps(validate)
    def validate_method(self: Any, attachments: Any = None) -> None:
        _validate_without_io(self, functools.partial(validate, self), attachments)

    setattr(execute_method, _MARK, True)
    target.execute = execute_method
    setattr(target, _VALIDATE, validate_method)


def _wrap_instance(model: Any) -> None:
    execute, validate = model.execute, getattr(model, _VALIDATE)

    @functools.wraps(execute)
    def execute_instance(prompt: Any, *args: Any, **kwargs: Any) -> Any:
        return _prepared(model, execute, validate, prompt, args, kwargs)

    setattr(execute_instance, _MARK, True)
    model.execute = execute_instance
    setattr(model, _VALIDATE, functools.partial(_validate_without_io, model, validate))


def _needs_io_to_type(attachment: Any) -> bool:
    if attachment.type or not (attachment.path or attachment.url):
        return False
    state = peek(attachment)
    return state is None or state.type is UNSET


def _validate_without_io(
    model: Any, validate: Callable[..., None], attachments: Any = None
) -> None:
    """llm's attachment checks, minus those that need I/O: they run after prepare."""
    if attachments and not model.attachment_types:
        raise ValueError("This model does not support attachments")
    ready = []
    for attachment in attachments or ():
        if _needs_io_to_type(attachment):
            state_of(attachment).check_type = True
        else:
            ready.append(attachment)
    validate(ready)


@dataclass
class _Turn:
    """What one ``execute()`` was prepared with: the lease holding what it reads,
    and the execution whose reads are watched and learned from."""

    execution: Execution | None
    lease: Lease | None = None
    placed: list[tuple[Any, Place]] = field(default_factory=list)

    def end(self, *, finished: bool) -> None:
        if self.lease is not None:
            self.lease.release()
            if self.execution is not None:
                self.execution.finish(_types(self.placed), finished=finished)


async def _prepared(
    model: Any,
    execute: Callable[..., AsyncGenerator[Any, None]],
    validate: Callable[..., None],
    prompt: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> AsyncGenerator[Any, None]:
    key = (id(model), id(prompt))
    running = _running.get()
    if key in running:
        # Another of our wrappers, further out (another plugin's re-wrap), prepared
        # already and watches the reads: this one just runs the model.
        turn = _Turn(learned_reads.current())
    else:
        turn, prompt, args, kwargs = await _prepare_turn(model, validate, prompt, args, kwargs)
    inside = running | {key}
    finished = False
    try:
        generator = execute(prompt, *args, **kwargs)
        try:
            while True:
                entered = _enter(inside, turn.execution)
                try:
                    chunk = await anext(generator)
                except StopAsyncIteration:
                    finished = True
                    return
                finally:
                    _leave(entered)
                yield chunk
        finally:
            if not finished:  # stopped early (an error, a cancel, the caller's aclose)
                entered = _enter(inside, turn.execution)
                try:
                    await generator.aclose()
                finally:
                    _leave(entered)
    finally:
        turn.end(finished=finished)


_Entered = tuple[Token[frozenset[tuple[int, int]]], Token[bool], Token[Execution | None]]


def _enter(inside: frozenset[tuple[int, int]], execution: Execution | None) -> _Entered:
    """Enter the model's context: the guard's "async model execution", this wrapper's
    mark, and the execution whose reads are watched. The model's code runs inside it,
    the caller's (between chunks) outside; set and reset directly, not with a context
    manager or a coroutine, as this runs for every chunk."""
    return (
        _running.set(inside),
        guard.EXECUTING.set(True),
        learned_reads.WATCHING.set(execution),
    )


def _leave(entered: _Entered) -> None:
    marked, executing, watched = entered
    learned_reads.WATCHING.reset(watched)
    guard.EXECUTING.reset(executing)
    _running.reset(marked)


async def _prepare_turn(
    model: Any,
    validate: Callable[..., None],
    prompt: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[_Turn, Any, tuple[Any, ...], dict[str, Any]]:
    """Prepare the prompt's attachments, run llm's deferred checks, and make the views an
    opted-in model sees: the turn, and the prompt and arguments to run the model with."""
    conversation = kwargs.get("conversation", args[2] if len(args) > 2 else None)
    plans: list[Plan] = []

    def planned() -> Plan:
        plans.append(plan_for(model))
        return plans[0]

    lease = Lease(0)  # what execute() reads stays in memory; prepare sets its budget
    try:
        _summary, placed = await prepare_for(prompt, conversation, planned, lease)
        # llm's own ValueError, now without I/O. The mark is never cleared: another
        # prompt, perhaps for another model, may have deferred its check on the same
        # attachment, and checking a known type again costs nothing.
        deferred = [a for a in prompt.attachments or () if getattr(peek(a), "check_type", False)]
        if deferred:
            validate(deferred)
    except BaseException:
        lease.release()
        raise
    execution = Execution(model_key(model))
    for attachment, place in placed:
        # One the model is sent as a URL teaches nothing about what it reads.
        if not plans[0].sent_as_url(attachment, _types_of(attachment)):
            execution.offer(attachment, place)
    if getattr(model, "supports_async_attachments", False):
        views = Views()
        # Earlier responses first: the prompt's message chain extends theirs.
        if "conversation" in kwargs:
            kwargs = {**kwargs, "conversation": views.conversation(conversation)}
        elif len(args) > 2:
            args = (*args[:2], views.conversation(conversation), *args[3:])
        prompt = views.prompt(prompt)
    return _Turn(execution, lease, placed), prompt, args, kwargs


def _types(placed: list[tuple[Any, Place]]) -> dict[int, str | None]:
    """Each attachment's type, as resolved by now (the key its reads are learned by)."""
    return {id(attachment): _types_of(attachment) for attachment, _place in placed}


def _types_of(attachment: Any) -> str | None:
    if attachment.type:
        return str(attachment.type)
    state = peek(attachment)
    return None if state is None or state.type is UNSET else state.type
