"""The sync→async bridge: sync-only llm models as async models a server can trust.

Async-only consumers (Datasette's enrichments, FastAPI apps) can only use
async models. :func:`bridge_model` gives a sync model (``llm.Model`` or
``llm.KeyModel``) an async form that runs its ``execute()`` generator on a
worker thread, with what a shared thread pool alone does not give:

* **bounded and fair**: at most ``Config.bridge_workers`` sync prompts run at
  once in the process, at most ``Config.bridge_model_workers`` of one model;
  others wait without blocking the loop, first come first served within a
  model, and the model served least recently goes first across models, so
  one model's long prompts cannot starve another's short ones;
* **back-pressure**: the worker runs at most :data:`BUFFER` chunks ahead of
  the consumer, so a slow consumer holds memory constant;
* **cancellation**: when the consumer is cancelled or stops reading, the sync
  generator is closed (its ``finally`` runs) on its thread at its next chunk,
  and the worker is freed;
* **errors**: exceptions reach the consumer with their own type, message and
  traceback; a ``KeyboardInterrupt``, ``SystemExit`` or other
  ``BaseException`` in a worker becomes :class:`BridgeInterrupted`: never a
  cut-off response marked done, never a hang;
* **the same model**: ``Options`` (validated, and given to ``execute()``),
  ``model_id``, ``can_stream``, ``attachment_types``, ``supports_*``, key
  settings and any plugin attribute read through to the sync model;
  attachments are prepared (caps, cache) before a worker is taken.

The llm plugin gives every sync-only model llm hands out such a form (see
:func:`add_async_forms`).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import inspect
import itertools
import os
import queue
import threading
import weakref
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any

import llm

from ..config import Config, get_config
from .hook import prepare_before_execute

__all__ = ["BUFFER", "BridgeInterrupted", "BridgeQueueTimeout", "add_async_forms", "bridge_model"]

BUFFER = 8
"""Chunks a worker may produce ahead of its consumer before it waits."""

_POLL = 1.0
# A worker waiting for room re-checks this often that its consumer's event
# loop still exists: a loop closed without closing its async generators
# would otherwise keep the thread (and the process) alive forever.

# Public data attributes llm's async base classes define (``can_stream``,
# ``supports_tools``, ``needs_key``... varying with the llm version): on the
# async form they would hide the sync model's own values, so each one is
# read through to the sync model instead.
_READ_THROUGH = tuple(
    name
    for name in dir(llm.AsyncKeyModel)
    if not name.startswith("_")
    and name != "Options"
    and not callable(inspect.getattr_static(llm.AsyncKeyModel, name))
)

# Other plugins' bridges that this one replaces: they wrap the same sync model.
_REPLACED_BRIDGES = frozenset({"llm_all_models_async"})


class BridgeQueueTimeout(TimeoutError):
    """A bridged prompt waited longer than ``Config.bridge_queue_timeout`` for a worker."""


class BridgeInterrupted(RuntimeError):
    """A sync model raised a ``BaseException`` (``KeyboardInterrupt``, ``SystemExit``...)
    on its worker thread.

    Re-raising it on the event loop would stop the whole application, so the
    consumer gets this instead; the original is its ``__cause__``, with its
    traceback. The response is incomplete and is not marked done.
    """


def bridge_model(model: llm.Model | llm.KeyModel) -> llm.AsyncModel | llm.AsyncKeyModel:
    """The async form of a sync model, running it on the bridge's worker threads.

    The result is an ``llm.AsyncModel`` (``llm.AsyncKeyModel`` for a
    ``KeyModel``) with the sync model's ``Options`` and attributes. Its class
    is made once per sync class, so calling this on every registry lookup is
    cheap.
    """
    if not isinstance(model, llm.Model | llm.KeyModel):
        raise TypeError(f"{model!r} is not a sync llm model")
    bridged: llm.AsyncModel | llm.AsyncKeyModel = _async_class(type(model))(model)
    return bridged


def add_async_forms(model_aliases: Iterable[Any]) -> None:
    """Give every sync-only model in llm's registry entries its bridged async form.

    A model that has an async form of its own keeps it. One that has only
    ``llm-all-models-async``'s wrapper gets this bridge instead, built around
    the sync model (never around the other wrapper).
    """
    for entry in model_aliases:
        current = entry.async_model
        if entry.model is not None and (
            current is None or type(current).__module__ in _REPLACED_BRIDGES
        ):
            entry.async_model = bridge_model(entry.model)


class _Bridged:
    """What every bridged class shares; mixed in before ``llm.AsyncModel``."""

    supports_async_attachments = False  # the sync model reads attachments the sync way

    def __init__(self, sync_model: Any) -> None:
        self._sync_model = sync_model

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the async form lacks: model_id, plugin attributes.
        if name == "_sync_model" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._sync_model, name)

    def get_key(self, explicit_key: str | None = None) -> str | None:
        key: str | None = self._sync_model.get_key(explicit_key)
        return key

    async def _run(
        self, prompt: Any, stream: bool, response: Any, conversation: Any, key: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        sync_conversation = await _sync_view(conversation, self._sync_model)
        # A weak proxy: the worker thread must not keep the response alive, so
        # that a response its consumer drops unfinished can be collected, and
        # its sync generator closed, instead of holding a worker forever.
        start = functools.partial(
            self._sync_model.execute,  # called as llm calls it
            prompt,
            stream=stream,
            response=weakref.proxy(response),
            conversation=sync_conversation,
            **key,
        )
        async for chunk in _stream(self._sync_model.model_id, start):
            yield chunk


class _BridgedModel(_Bridged, llm.AsyncModel):
    def execute(  # type: ignore[override, unused-ignore]
        self, prompt: Any, stream: bool, response: Any, conversation: Any = None
    ) -> AsyncGenerator[Any, None]:
        return self._run(prompt, stream, response, conversation, {})


class _BridgedKeyModel(_Bridged, llm.AsyncKeyModel):
    def execute(  # type: ignore[override, unused-ignore]
        self,
        prompt: Any,
        stream: bool,
        response: Any,
        conversation: Any = None,
        key: str | None = None,
    ) -> AsyncGenerator[Any, None]:
        return self._run(prompt, stream, response, conversation, {"key": key})


def _read_through(name: str) -> property:
    def get(self: _Bridged) -> Any:
        return getattr(self._sync_model, name)

    def set(self: _Bridged, value: Any) -> None:
        setattr(self._sync_model, name, value)

    return property(get, set, doc=f"The sync model's ``{name}``.")


for _name in _READ_THROUGH:
    setattr(_Bridged, _name, _read_through(_name))


@functools.cache
def _async_class(sync_class: type[llm.Model] | type[llm.KeyModel]) -> type[Any]:
    base = _BridgedKeyModel if issubclass(sync_class, llm.KeyModel) else _BridgedModel
    namespace = {
        "Options": sync_class.Options,
        "__module__": __name__,
        "__qualname__": sync_class.__qualname__,
        "__doc__": f"{sync_class.__qualname__}, bridged to async ({__name__}).",
    }
    # The sync class's name, so that str() reads "Markov (async): markov".
    return prepare_before_execute(type(sync_class.__name__, (base,), namespace))


async def _sync_view(conversation: Any, sync_model: Any) -> Any:
    """The conversation as the sync plugin expects it: a ``Conversation`` of ``Response``s.

    A sync plugin rebuilding the history calls ``response.text()``, which on
    an ``AsyncResponse`` returns a coroutine instead of the text.
    """
    if conversation is None:
        return None
    responses = [await response.to_sync_response() for response in conversation.responses]
    shared = {
        each.name: getattr(conversation, each.name)
        for each in dataclasses.fields(llm.Conversation)
        if hasattr(conversation, each.name)
    }
    return llm.Conversation(**{**shared, "model": sync_model, "responses": responses})


# --- one prompt: a worker thread, its consumer, and the handoff between them ----------


class _End:
    """The worker's last word: the generator finished, or raised ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


async def _stream(model_id: str, start: Callable[[], Iterable[Any]]) -> AsyncGenerator[Any, None]:
    """Run ``start()`` and iterate what it returns on a worker thread; yield the chunks."""
    loop = asyncio.get_running_loop()
    await _POOL.acquire(model_id, get_config())
    handoff = _Handoff(loop)
    release = functools.partial(_POOL.release, model_id)
    context = contextvars.copy_context()
    worker = threading.Thread(
        target=context.run, args=(_work, start, handoff, release), name=f"llm-bridge[{model_id}]"
    )

    def not_started(error: BaseException) -> None:
        handoff.finish(_End(error))
        release()

    try:
        _LAUNCHER.launch(worker, not_started)
        while True:
            item = await handoff.get()
            if isinstance(item, _End):
                if item.error is None:
                    return
                if isinstance(item.error, Exception):
                    raise item.error
                raise BridgeInterrupted(
                    f"The sync model {model_id!r} raised {type(item.error).__name__} on its "
                    "worker thread; the response is incomplete."
                ) from item.error
            yield item
    finally:
        handoff.close()


def _work(
    start: Callable[[], Iterable[Any]], handoff: _Handoff, release: Callable[[], None]
) -> None:
    """The worker thread: produce chunks until done, failed, or no longer wanted."""
    end = _End()
    try:
        chunks = iter(start())
        try:
            for chunk in chunks:
                if not handoff.put(chunk):
                    break
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # the generator's finally runs here, on this thread
    except BaseException as error:
        end = _End(error)
    delivered = handoff.finish(end)
    release()
    if end.error is not None and not delivered:
        raise end.error  # its consumer has gone: threading.excepthook reports it


class _Handoff:
    """At most :data:`BUFFER` chunks from one worker thread to one consumer on a loop.

    The worker waits (on its own thread) while the buffer is full; the
    consumer awaits a future the worker resolves through the loop. Only the
    short critical sections below ever hold the lock, so the loop never waits.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready = threading.Condition()
        self._items: deque[Any] = deque()
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    def put(self, chunk: Any) -> bool:
        """Worker: hand over a chunk, waiting for room. ``False``: stop, nobody reads."""
        with self._ready:
            while len(self._items) >= BUFFER and not self._closed:
                if not self._ready.wait(_POLL) and self._loop.is_closed():
                    self._closed = True
            if self._closed:
                return False
            self._items.append(chunk)
            self._wake()
            return True

    def finish(self, end: _End) -> bool:
        """Worker: hand over the end, never waiting. ``False``: nobody reads any more."""
        with self._ready:
            if self._closed:
                return False
            self._items.append(end)
            self._wake()
            return not self._closed

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            try:
                self._loop.call_soon_threadsafe(_resolve, waiter)
            except RuntimeError:  # the loop is closed: its consumer is gone
                self._closed = True

    async def get(self) -> Any:
        """Consumer: the next chunk or :class:`_End`."""
        while True:
            with self._ready:
                if self._items:
                    self._ready.notify()
                    return self._items.popleft()
                self._waiter = waiter = self._loop.create_future()
            await waiter

    def close(self) -> None:
        """Consumer: stop reading; the worker stops at its next chunk."""
        with self._ready:
            self._closed = True
            self._items.clear()
            self._ready.notify()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


LAUNCHERS = 4
"""Threads that start worker threads, at most; a burst of prompts uses them all."""

_LAUNCHER_NAME = "llm-bridge-launcher"


class _Launcher:
    """Starts worker threads from threads of its own, never from the event loop.

    ``Thread.start()`` waits until the new thread runs: 0.1 ms when idle, up to
    6 ms with dozens of threads busy on 2 cores, and a burst of 64 prompts
    started on the loop stalled it for 10 to 80 ms. One launcher starting a
    burst of 256 threads in a row took 0.3 to 0.9 s on 2 busy cores, each
    start waiting for the one before; a few launchers wait side by side, and
    started the same 256 in 40 to 50 ms. The first launcher is started on
    first use; while starts queue up behind a launcher, it starts another,
    up to :data:`LAUNCHERS`. They are daemon threads that wait for work.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also in a child process after fork(): the parent's launchers, their
        # queue of the parent's prompts, and a lock one of them held, are not its own.
        self._queue: queue.SimpleQueue[tuple[threading.Thread, Callable[..., None]]]
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def launch(self, worker: threading.Thread, failed: Callable[[BaseException], None]) -> None:
        """Start ``worker`` soon, without waiting; ``failed(error)`` if it cannot start."""
        self._queue.put((worker, failed))
        with self._lock:
            # Launchers never end, so the first one is dead only in a child
            # process after fork(), where every thread of the parent is gone.
            if not self._threads or not self._threads[0].is_alive():
                first = threading.Thread(target=self._run, name=_LAUNCHER_NAME, daemon=True)
                first.start()
                self._threads = [first]

    def _grow(self) -> None:
        """One more launcher, started from this launcher's thread, if there is room."""
        with self._lock:
            if len(self._threads) >= LAUNCHERS:
                return
            thread = threading.Thread(target=self._run, name=_LAUNCHER_NAME, daemon=True)
            self._threads.append(thread)
        try:  # not under the lock: launch(), on the loop, must never wait for a start
            thread.start()
        except RuntimeError:  # no thread to be had: the launchers running carry on
            with self._lock:
                self._threads.remove(thread)

    def _run(self) -> None:
        while True:
            worker, failed = self._queue.get()
            if not self._queue.empty():
                self._grow()
            try:
                worker.start()
            except BaseException as error:  # no thread to be had: tell its consumer
                failed(error)


_LAUNCHER = _Launcher()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_LAUNCHER._reset)


# --- the worker slots, shared by every event loop in the process ----------------------


@dataclasses.dataclass(eq=False)
class _Waiter:
    model_id: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    granted: bool = False


class _Pool:
    """Worker slots: ``bridge_workers`` in all, ``bridge_model_workers`` per model.

    A thread per prompt, started when its slot is granted and ended when the
    sync generator is closed, so no idle thread outlives its work. Waiting
    prompts are queued per model (FIFO); a free slot goes to the waiting model
    served least recently.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0
        self._running: Counter[str] = Counter()
        self._waiting: dict[str, deque[_Waiter]] = {}
        self._served: dict[str, int] = {}
        self._turns = itertools.count()

    async def acquire(self, model_id: str, config: Config) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if model_id not in self._waiting and self._has_room(model_id, config):
                self._take(model_id)
                return
            waiter = _Waiter(model_id, loop, loop.create_future())
            self._waiting.setdefault(model_id, deque()).append(waiter)
            self._dispatch(config)
        try:
            async with asyncio.timeout(config.bridge_queue_timeout):
                await waiter.future
        except BaseException as error:
            with self._lock:
                if waiter.granted:
                    self._free(model_id, config)
                else:
                    waiters = self._waiting[model_id]
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiting[model_id]
                running = self._total
            if isinstance(error, TimeoutError):
                raise BridgeQueueTimeout(
                    f"No bridge worker became free for the sync model {model_id!r} within "
                    f"{config.bridge_queue_timeout:g} s ({running} prompts running, at most "
                    f"{config.bridge_workers} in all and {config.bridge_model_workers} per "
                    "model). Raise LLM_ASYNC_ATTACHMENTS_BRIDGE_WORKERS or "
                    "LLM_ASYNC_ATTACHMENTS_BRIDGE_MODEL_WORKERS, or "
                    "LLM_ASYNC_ATTACHMENTS_BRIDGE_QUEUE_TIMEOUT to wait longer."
                ) from None
            raise

    def release(self, model_id: str) -> None:
        """Give a slot back (from any thread) and hand it to the next waiter."""
        with self._lock:
            self._free(model_id, get_config())

    def _has_room(self, model_id: str, config: Config) -> bool:
        per_model = min(config.bridge_model_workers, config.bridge_workers)
        return self._total < config.bridge_workers and self._running[model_id] < per_model

    def _take(self, model_id: str) -> None:
        self._total += 1
        self._running[model_id] += 1
        self._served[model_id] = next(self._turns)

    def _free(self, model_id: str, config: Config) -> None:
        self._total -= 1
        self._running[model_id] -= 1
        if not self._running[model_id]:
            del self._running[model_id]
        self._dispatch(config)

    def _dispatch(self, config: Config) -> None:
        """Grant free slots, each to the oldest waiter of the least recently served model."""
        while self._total < config.bridge_workers:
            ready = [m for m in self._waiting if self._has_room(m, config)]
            if not ready:
                return
            model_id = min(ready, key=lambda m: self._served.get(m, -1))
            waiters = self._waiting[model_id]
            waiter = waiters.popleft()
            if not waiters:
                del self._waiting[model_id]
            try:
                waiter.loop.call_soon_threadsafe(_resolve, waiter.future)
            except RuntimeError:  # its loop is closed: nobody waits any more
                continue
            waiter.granted = True
            self._take(model_id)


_POOL = _Pool()
