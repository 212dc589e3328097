"""Test support: loopback servers, sample files, test models, measurements."""

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from importlib.util import find_spec

LLM_HAS_MESSAGES = find_spec("llm.parts") is not None
"""llm >= 0.36: prompts take messages= lists of Message parts."""


def eventually(condition: Callable[[], bool], within: float = 10.0) -> bool:
    """Whether ``condition()`` becomes true within ``within`` seconds (polled, sync).

    For what another thread reports a moment later, such as a server noticing
    that a client closed its connection. Not a timing assertion: the bound is
    far above what it takes.
    """
    give_up = time.monotonic() + within
    while not condition():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.005)
    return True


@contextlib.contextmanager
def warned(category: type[Warning]) -> Iterator[list[str]]:
    """The messages of the ``category`` warnings issued inside (filled at the end)."""
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield messages
    messages += [str(w.message) for w in seen if issubclass(w.category, category)]
