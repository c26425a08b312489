"""What micro-batching did since the last metrics flush.

A plain list, so recording a merged run costs one append on the hot path, and so the
metrics module (which the supervisor imports before forking) can drain it without
importing the batcher and numpy with it.
"""

from __future__ import annotations

__all__ = ["drain", "record"]

#: (model, version, rows, requests, seconds the first caller waited) per merged run
_RUNS: list[tuple[str, str, int, int, float]] = []


def record(model: str, version: str, rows: int, requests: int, waited: float) -> None:
    _RUNS.append((model, version, rows, requests, waited))


def drain() -> list[tuple[str, str, int, int, float]]:
    """The merged runs recorded since the last call."""
    global _RUNS
    runs, _RUNS = _RUNS, []
    return runs
