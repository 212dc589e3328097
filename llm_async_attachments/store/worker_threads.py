"""A few daemon threads that run blocking calls for the event loop, started on first use.

The disk tier runs every SQLite call on a few of them rather than on the loop's
default executor: SQLite writes one transaction at a time anyway, and each thread
more is one more that the loop's thread waits on for the GIL. Writing 1,000 bodies of
64 KiB, 64 at a time: 583 ms and a 25 ms stall on the default executor (six threads
on two cores), 423 ms and 6 ms on two threads (``benchmarks/disk_store_choice.py``).

Most calls are small (a claim, a lookup: some 50 us of SQLite), and handing a result
back to a loop costs more than that: a wake-up of the loop's thread per result. So a
thread runs the jobs waiting for it one after the other, for up to
:data:`BATCH_SECONDS`, and hands their results back to each loop at once: 5,000
claims and releases, 64 at a time, took half the time they took with a hand-back
each (docs/design.md).

Daemon threads, so that they never hold the interpreter at exit (a write cut short
there is rolled back by SQLite when the database is next opened) and are no
thread leak to pyleak; restarted in a child after ``fork()``, where threads do not
survive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["BATCH_SECONDS", "WorkerThreads"]

T = TypeVar("T")

BATCH_SECONDS = 0.002
"""The longest a thread runs waiting jobs before it hands their results back."""


class _Job:
    """A call for a loop's future; ``skip`` once its caller is cancelled."""

    __slots__ = ("call", "future", "loop", "skip")

    def __init__(self, loop: asyncio.AbstractEventLoop, call: Callable[[], Any]) -> None:
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.call = call
        self.skip = False


_Outcome = tuple[_Job, bool, Any]  # the job, whether it returned, and what it returned or raised


class WorkerThreads:
    """``count`` daemon threads named ``name``, taking jobs in order."""

    def __init__(self, count: int, name: str) -> None:
        self._count = count
        self._name = name
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._started = 0
        os.register_at_fork(after_in_child=self._forked)

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` on one of the threads; cancelling this before it starts skips it
        (and once it started, drops what it returns)."""
        if self._started < self._count:
            self._start()
        job = _Job(asyncio.get_running_loop(), call)
        self._jobs.put(job)
        try:
            result: T = await job.future
        except asyncio.CancelledError:
            job.skip = True
            raise
        return result

    def _start(self) -> None:
        with self._lock:
            while self._started < self._count:
                self._started += 1
                name = f"{self._name}-{self._started}"
                threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while True:
            # Nothing of a batch (a loop, a result) is left alive while the thread waits.
            _hand_back(self._batch(self._jobs.get()))

    def _batch(self, job: _Job) -> dict[asyncio.AbstractEventLoop, list[_Outcome]]:
        """``job``, then those waiting after it for up to :data:`BATCH_SECONDS`: their
        outcomes, by loop."""
        until = time.monotonic() + BATCH_SECONDS
        done: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        while True:
            if not job.skip:
                done.setdefault(job.loop, []).append(_outcome(job))
            if time.monotonic() >= until:
                return done
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return done

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._jobs = queue.SimpleQueue()
        self._started = 0


def _outcome(job: _Job) -> _Outcome:
    try:
        return job, True, job.call()
    except StopIteration as exc:  # a future refuses it (it would end the awaiting coroutine)
        error = RuntimeError("a worker-thread call raised StopIteration")
        error.__cause__ = exc
        return job, False, error
    except BaseException as exc:  # handed to the awaiting task, whatever it is
        return job, False, exc


def _hand_back(done: dict[asyncio.AbstractEventLoop, list[_Outcome]]) -> None:
    for loop, outcomes in done.items():
        with contextlib.suppress(RuntimeError):  # closed: nobody waits for these
            loop.call_soon_threadsafe(_settle, outcomes)


def _settle(outcomes: list[_Outcome]) -> None:
    """On the loop: each outcome to its future, unless its caller was cancelled."""
    for job, returned, value in outcomes:
        if job.future.done():
            continue
        if returned:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)
