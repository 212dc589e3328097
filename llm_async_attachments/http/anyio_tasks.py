"""The one place that reads anyio's private record of tasks: to free the fetches of a closed loop.

httpcore2 reads and writes inside anyio's ``fail_after``, and anyio keeps, for
every asyncio task inside a cancel scope, an entry in a module-level
``WeakKeyDictionary`` (``_task_states``) whose value, the scope, refers back
to the task. A scope ends when its task leaves it; a task whose loop was
closed in the middle of a fetch never does, so its entry keeps the task, its
coroutines, the connection and the socket alive for good.

:func:`forget_tasks_of_closed_loops` drops the entries of tasks whose loop is
closed (they can never run again): the garbage collector then frees them, and
closes their sockets. ``loops.PerLoop`` calls it (through the pools) when it
forgets a loop that was closed without shutting down. If anyio no longer keeps
that record as expected, nothing is done, as before this module existed;
``tests/test_loops.py`` fails loudly when that happens.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any
from weakref import WeakKeyDictionary

__all__ = ["forget_tasks_of_closed_loops", "task_states"]


def task_states() -> WeakKeyDictionary[Any, Any] | None:
    """anyio's record of tasks in cancel scopes, or ``None`` if it is not what we expect."""
    try:
        backend = importlib.import_module("anyio._backends._asyncio")
    except ImportError:
        return None
    states = getattr(backend, "_task_states", None)
    return states if isinstance(states, WeakKeyDictionary) else None


def forget_tasks_of_closed_loops() -> None:
    """Drop anyio's entries for tasks whose loop is closed (from any thread, or the
    garbage collector's callback)."""
    states = task_states()
    if states is None:
        return
    try:
        tasks = list(states.keys())
    except RuntimeError:  # another thread's loop changed it meanwhile: the next pass will do
        return
    for task in tasks:
        if isinstance(task, asyncio.Task) and task.get_loop().is_closed():
            states.pop(task, None)
