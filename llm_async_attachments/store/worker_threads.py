"""A few daemon threads that run blocking calls for the event loop, started on first use.

The disk tier runs every SQLite call on them rather than on the loop's default
executor: SQLite writes one transaction at a time anyway, and each thread more is one
more that the loop's thread waits on for the GIL. Writing 1,000 bodies of 64 KiB, 64
at a time: 583 ms and a 25 ms stall on the default executor (six threads on two
cores), 423 ms and 6 ms on two threads (``benchmarks/disk_store_choice.py``).

Daemon threads, so that they never hold the interpreter at exit (a write cut short
there is rolled back by SQLite when the database is next opened) and are no
thread leak to pyleak; restarted in a child after ``fork()``, where threads do not
survive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["WorkerThreads"]

T = TypeVar("T")
_Job = tuple[concurrent.futures.Future[Any], Callable[[], Any]]


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
        """``call()`` on one of the threads; cancelling this before it starts skips it."""
        if self._started < self._count:
            self._start()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((done, call))
        return await asyncio.wrap_future(done)

    def _start(self) -> None:
        with self._lock:
            while self._started < self._count:
                self._started += 1
                name = f"{self._name}-{self._started}"
                threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while True:
            done, call = self._jobs.get()
            if not done.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:  # handed to the awaiting task, whatever it is
                done.set_exception(exc)
            else:
                done.set_result(result)
            del done, call  # not kept alive while waiting for the next job

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._jobs = queue.SimpleQueue()
        self._started = 0
