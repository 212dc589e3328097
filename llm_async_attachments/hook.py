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
from contextvars import ContextVar
from typing import Any, TypeVar

import llm

from . import reads

# The guard's mark of an async model's execution; executing_async_model() sets the
# same, but this wrapper sets it around every chunk, where a context manager costs.
from .guard import _executing
from .memory import Lease
from .patch import install
from .prepare import Plan, plan_for, prepare_for
from .reads import Execution, Place, model_key
from .state import UNSET, peek, state_of
from .views import Views

__all__ = ["prepare_before_execute"]

M = TypeVar("M")
_MARK = "_llm_async_attachments_prepares"
# (model, prompt) pairs whose execute() is running under one of our wrappers:
# a second wrapper around the same model (another plugin's re-wrap) must not
# prepare again.
_running: ContextVar[frozenset[tuple[int, int]]] = ContextVar(
    "llm_async_attachments_running", default=frozenset()
)


def prepare_before_execute(target: M) -> M:
    """Make an async model, or an async model class, prepare attachments first.

    For an instance (``model = prepare_before_execute(MyAsyncModel())``) the
    model stays an instance of its own class with all its attributes; only
    its ``execute`` and ``_validate_attachments`` are wrapped. As a class
    decorator it wraps the methods of the class. Applying it twice is
    harmless: it returns the target unchanged. Sync models are refused with
    ``TypeError``: they do not run on an event loop. Installs the guard
    (see [`install`][llm_async_attachments.install]).
    """
    install()
    if isinstance(target, type):
        if not issubclass(target, (llm.AsyncModel, llm.AsyncKeyModel)):
            raise TypeError(f"{target.__name__} is not an llm async model class")
        if not getattr(target.execute, _MARK, False):
            execute, validate = target.execute, target._validate_attachments

            @functools.wraps(execute)
            def execute_method(self: Any, prompt: Any, *args: Any, **kwargs: Any) -> Any:
                run = functools.partial(execute, self)
                checks = functools.partial(validate, self)
                return _prepared(self, run, checks, prompt, args, kwargs)

            @functools.wraps(validate)
            def validate_method(self: Any, attachments: Any = None) -> None:
                _validate_without_io(self, functools.partial(validate, self), attachments)

            setattr(execute_method, _MARK, True)
            target.execute = execute_method  # type: ignore[method-assign]
            target._validate_attachments = validate_method  # type: ignore[method-assign]
        return target
    if not isinstance(target, (llm.AsyncModel, llm.AsyncKeyModel)):
        raise TypeError(f"{target!r} is not an llm async model")
    model: Any = target
    if getattr(model.execute, _MARK, False):
        return target
    execute, validate = model.execute, model._validate_attachments

    @functools.wraps(execute)
    def execute_instance(prompt: Any, *args: Any, **kwargs: Any) -> Any:
        return _prepared(model, execute, validate, prompt, args, kwargs)

    setattr(execute_instance, _MARK, True)
    model.execute = execute_instance
    model._validate_attachments = functools.partial(_validate_without_io, model, validate)
    return target


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
    # Another of our wrappers, further out (another plugin's re-wrap), prepared
    # already and watches the reads: this one just runs the model.
    execution, lease = reads.current(), None
    placed: list[tuple[Any, Place]] = []
    if key not in running:
        conversation = kwargs.get("conversation", args[2] if len(args) > 2 else None)
        plans: list[Plan] = []

        def planned() -> Plan:
            plans.append(plan_for(model))
            return plans[0]

        lease = Lease(0)  # what execute() reads stays in memory; prepare sets its budget
        try:
            _summary, placed = await prepare_for(prompt, conversation, planned, lease)
        except BaseException:
            lease.release()
            raise
        execution = Execution(model_key(model))
        for attachment, place in placed:
            # One the model is sent as a URL teaches nothing about what it reads.
            if not plans[0].sent_as_url(attachment, _types_of(attachment)):
                execution.offer(attachment, place)
        # llm's own ValueError, now without I/O. The mark is never cleared: another
        # prompt, perhaps for another model, may have deferred its check on the same
        # attachment, and checking a known type again costs nothing.
        if prompt.attachments:
            deferred = [a for a in prompt.attachments if getattr(peek(a), "check_type", False)]
            if deferred:
                try:
                    validate(deferred)
                except BaseException:
                    lease.release()
                    raise
        if getattr(model, "supports_async_attachments", False):
            views = Views()
            # Earlier responses first: the prompt's message chain extends theirs.
            if "conversation" in kwargs:
                kwargs = {**kwargs, "conversation": views.conversation(conversation)}
            elif len(args) > 2:
                args = (*args[:2], views.conversation(conversation), *args[3:])
            prompt = views.prompt(prompt)
    inside = running | {key}
    # The model's code runs inside the context (the guard's "async model
    # execution", this wrapper's mark, and the execution whose reads are
    # watched); the caller's code, between chunks, runs outside it. Set and
    # reset directly: this runs for every chunk.
    finished = False
    try:
        generator = execute(prompt, *args, **kwargs)
        try:
            while True:
                marked, executing = _running.set(inside), _executing.set(True)
                watched = reads._current.set(execution)
                try:
                    chunk = await anext(generator)
                except StopAsyncIteration:
                    finished = True
                    return
                finally:
                    reads._current.reset(watched)
                    _executing.reset(executing)
                    _running.reset(marked)
                yield chunk
        finally:
            if not finished:  # stopped early (an error, a cancel, the caller's aclose)
                marked, executing = _running.set(inside), _executing.set(True)
                watched = reads._current.set(execution)
                try:
                    await generator.aclose()
                finally:
                    reads._current.reset(watched)
                    _executing.reset(executing)
                    _running.reset(marked)
    finally:
        if lease is not None:
            lease.release()
            if execution is not None:
                execution.finish(_types(placed), finished=finished)


def _types(placed: list[tuple[Any, Place]]) -> dict[int, str | None]:
    """Each attachment's type, as resolved by now (the key its reads are learned by)."""
    return {id(attachment): _types_of(attachment) for attachment, _place in placed}


def _types_of(attachment: Any) -> str | None:
    if attachment.type:
        return str(attachment.type)
    state = peek(attachment)
    return None if state is None or state.type is UNSET else state.type
