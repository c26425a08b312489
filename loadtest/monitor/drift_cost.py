"""CPU a worker spends on drift monitoring per request, measured in-process.

The ghz comparison of ``drift_bench`` is what a client sees, but on a small shared machine its
run-to-run noise is of the same order as the effect. This measures the drift path alone on
the benchmark's own requests: the request-path append, then the timer's binning amortised
over the requests it covers (the best of several repeats, :mod:`loadtest.monitor.path_cost`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.monitor.path_cost import Served, best_times, served_requests, timed

__all__ = ["drift_cpu_per_request", "drift_variant"]


def drift_variant(handle: Any, served: list[Served]) -> Callable[[], dict[str, float]]:
    """One pass of the drift path: ``drift_observe`` (request path), ``drift_process``
    (timer). A fresh monitor per pass, so every pass bins the same requests."""
    from server.drift import DriftMonitor

    def run() -> dict[str, float]:
        monitor = DriftMonitor(export=False)
        monitor.register(handle)

        def observe() -> None:
            for s in served:
                monitor.observe(handle, s.feeds, s.proba, s.rows)

        return timed(("drift_observe", observe), ("drift_process", monitor.process))

    return run


def drift_cpu_per_request(
    model_repository: Path, data_file: Path, requests: int = 3000, repeats: int = 5
) -> dict[str, float]:
    """Microseconds per request: ``observe`` (request path) and ``process`` (timer)."""
    handle, served = served_requests(model_repository, data_file, requests)
    best = best_times([drift_variant(handle, served)], repeats)
    observe, process = best["drift_observe"], best["drift_process"]
    return {
        "observe_us": round(observe / requests * 1e6, 2),
        "process_us": round(process / requests * 1e6, 2),
        "total_us": round((observe + process) / requests * 1e6, 2),
    }
