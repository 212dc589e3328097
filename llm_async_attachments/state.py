"""What prepare found for an attachment, kept on the attachment object itself.

The state lives in an attribute that is not a dataclass field, so it changes
neither ``id()``, ``==``, ``repr()``, ``.content``, nor anything llm logs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from .errors import AttachmentsTotalTooLarge

_ATTRIBUTE: Final = "_llm_async_attachments_state"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


@dataclass
class Prepared:
    """Cached results of preparing one attachment.

    ``type`` is ``UNSET`` until resolved (it may resolve to ``None``: no type
    could be found); ``content``, ``id`` and ``base64`` are ``None`` until
    read or computed.
    """

    type: str | _Unset | None = UNSET
    content: bytes | None = None
    id: str | None = None
    base64: str | None = None
    """``base64_content()``, for content over 2 MiB: encoded once, off the event loop."""
    check_type: bool = False
    """llm's type check was deferred from ``model.prompt()`` to the prepare step."""
    _flight: tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]] | None = field(
        default=None, repr=False
    )


def peek(attachment: object) -> Prepared | None:
    """The state of ``attachment`` if it has been prepared at all, without creating one."""
    return attachment.__dict__.get(_ATTRIBUTE)


def state_of(attachment: object) -> Prepared:
    """The state of ``attachment``, created empty on first use."""
    state = attachment.__dict__.get(_ATTRIBUTE)
    if state is None:
        state = attachment.__dict__.setdefault(_ATTRIBUTE, Prepared())
    return state


_RETRY: Final = object()


async def single_flight(
    state: Prepared,
    pending: Callable[[], Callable[[], Awaitable[None]] | None],
) -> None:
    """Run the work ``pending()`` names until none is left, one runner at a time.

    When two tasks on one loop prepare the same attachment, the second waits
    for the first and then asks ``pending()`` again, which usually finds
    nothing left to do: the attachment is fetched once. A failure is shared
    with the waiters, except a cancellation or a per-call total-size refusal,
    which are the owner's alone: a waiter then does the work itself.
    """
    loop = asyncio.get_running_loop()
    while (work := pending()) is not None:
        flight = state._flight
        if flight is not None and flight[0] is loop:
            outcome = await asyncio.shield(flight[1])
            if isinstance(outcome, BaseException):
                raise outcome
            continue
        future: asyncio.Future[Any] = loop.create_future()
        state._flight = (loop, future)
        outcome: object = _RETRY
        try:
            await work()
            outcome = None
        except AttachmentsTotalTooLarge:
            raise
        except Exception as error:
            outcome = error
            raise
        finally:
            state._flight = None
            future.set_result(outcome)
