"""The event loop a process runs on (``--event-loop``): uvloop or asyncio's own.

Kept apart from :mod:`server.worker` so that a process that only needs the loop (the
bare gRPC floor of the benchmarks) does not import ONNX Runtime and numpy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_loop"]

T = TypeVar("T")


def run_loop(event_loop: str, main: Coroutine[Any, Any, T]) -> T:
    """``main`` to completion on a new loop of the kind ``--event-loop`` names."""
    if event_loop == "uvloop":
        import uvloop  # the serve extra installs it

        return uvloop.run(main)
    return asyncio.run(main)
