"""Shared by the in-process cost measurements (drift, capture): the benchmark's own requests
scored once, then variants timed on them in alternating rounds, keeping the best of each
phase (as ``timeit`` does), so that a slow moment of a shared machine hits every variant
and the minimum is the cost of the code, not of the neighbours."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Served", "best_times", "latest_handle", "per_request_us", "served_requests", "timed"]


@dataclass(frozen=True)
class Served:
    """One scored request, as the core hands it to the observers and sinks."""

    prediction_id: str
    feeds: dict[str, Any]
    label: Any
    proba: Any
    rows: int


def latest_handle(model_repository: Path, name: str) -> Any:
    """The newest version of model ``name``, loaded as the server loads it."""
    from pronto_contract import list_versions
    from server.model import load_model

    versions = list_versions(model_repository, [name])[name]
    version = max(versions)
    return load_model(name, version, versions[version])


def served_requests(
    model_repository: Path, data_file: Path, requests: int
) -> tuple[Any, list[Served]]:
    """The model and ``requests`` Predict bodies of ``data_file`` (cycled), each scored once."""
    from server.features import columns_from_instances

    bodies = json.loads(data_file.read_text())
    handle = latest_handle(model_repository, bodies[0]["name"])
    served = []
    for i in range(requests):
        instances = bodies[i % len(bodies)]["instances"]
        feeds = columns_from_instances(handle.features, instances)
        label, proba = handle.run(feeds, [handle.label_output, handle.proba_output])
        served.append(Served(f"bench-{i}", feeds, label, proba, len(instances)))
    return handle, served


def best_times(
    variants: Sequence[Callable[[], dict[str, float]]], repeats: int
) -> dict[str, float]:
    """Run every variant once per round, ``repeats`` rounds; the least seconds per phase.
    Each variant returns ``{phase: seconds}`` for one pass over the requests."""
    best: dict[str, float] = {}
    for _ in range(repeats):
        for variant in variants:
            for phase, seconds in variant().items():
                best[phase] = min(best.get(phase, float("inf")), seconds)
    return best


def per_request_us(best: dict[str, float], requests: int) -> dict[str, float]:
    """Seconds per pass -> microseconds per request, rounded for reports."""
    return {phase: round(seconds / requests * 1e6, 2) for phase, seconds in best.items()}


def timed(*phases: tuple[str, Callable[[], object]]) -> dict[str, float]:
    """Seconds of each ``(phase, function)`` run in order."""
    out = {}
    for phase, fn in phases:
        t0 = time.perf_counter()
        fn()
        out[phase] = time.perf_counter() - t0
    return out
