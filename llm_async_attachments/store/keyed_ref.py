"""A weak reference that knows its key in the table that lists it."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["KeyedRef"]


class KeyedRef(weakref.ref):  # type: ignore[type-arg]
    """A weak reference carrying its key (the referent's ``id()``) and the referent's size.

    The tables of attachment states and of blobs hold thousands of these at once:
    one object per referent, where a callback closing over the key and size would
    add more for the garbage collector to scan in every full collection.
    """

    __slots__ = ("key", "size")

    key: int
    size: int

    def __new__(cls, referent: Any, callback: Callable[[Any], None], size: int = 0) -> KeyedRef:
        ref = super().__new__(cls, referent, callback)
        ref.key = id(referent)
        ref.size = size
        return ref

    def __init__(self, referent: Any, callback: Callable[[Any], None], size: int = 0) -> None:
        super().__init__(referent, callback)  # type: ignore[call-arg]
