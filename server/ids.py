"""Prediction ids: the caller's, or a cheap unique one generated in the serving process.

A generated id is a random per-process prefix (64 bits, drawn once when the generator is
built, i.e. after the worker has forked) followed by a hexadecimal counter, so making one
costs a counter step and a string format: no system call and no random draw per request.
Ids from different workers, pods and restarts differ by their prefix.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

__all__ = ["MAX_ID_LENGTH", "IdGenerator"]

#: longest id accepted from a caller (ids are stored and echoed, so they must stay small)
MAX_ID_LENGTH = 128


class IdGenerator:
    """Makes ids like ``3f9a0c1d2e4b5a69-1a``; build one per process, after fork."""

    __slots__ = ("_next", "prefix")

    def __init__(self) -> None:
        self.prefix = os.urandom(8).hex() + "-"
        self._next: Callable[[], int] = itertools.count(1).__next__

    def __call__(self) -> str:
        return f"{self.prefix}{self._next():x}"
