"""CPU a worker spends on drift monitoring per request, measured in-process.

The ghz comparison of ``drift_bench`` is what a client sees, but on a small shared machine its
run-to-run noise is of the same order as the effect. This measures the drift path alone on
the benchmark's own requests: the request-path append, then the timer's binning amortised
over the requests it covers (the best of several repeats, as ``timeit`` does).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["drift_cpu_per_request"]


def _handle(model_repository: Path, name: str) -> Any:
    from server.model import load_model

    versions = sorted(
        (int(p.name), p) for p in (model_repository / name).iterdir() if p.name.isdigit()
    )
    version, path = versions[-1]
    return load_model(name, version, path)


def drift_cpu_per_request(
    model_repository: Path, data_file: Path, requests: int = 3000, repeats: int = 5
) -> dict[str, float]:
    """Microseconds per request: ``observe`` (request path) and ``process`` (timer)."""
    from server.drift import DriftMonitor
    from server.features import columns_from_instances

    bodies = json.loads(data_file.read_text())
    handle = _handle(model_repository, bodies[0]["name"])
    served = []
    for i in range(requests):
        instances = bodies[i % len(bodies)]["instances"]
        feeds = columns_from_instances(handle.features, instances)
        _, proba = handle.run(feeds, [handle.label_output, handle.proba_output])
        served.append((feeds, proba, len(instances)))
    monitor = DriftMonitor(export=False)
    monitor.register(handle)
    observe = process = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for feeds, proba, rows in served:
            monitor.observe(handle, feeds, proba, rows)
        t1 = time.perf_counter()
        monitor.process()
        t2 = time.perf_counter()
        observe, process = min(observe, t1 - t0), min(process, t2 - t1)
    return {
        "observe_us": round(observe / requests * 1e6, 2),
        "process_us": round(process / requests * 1e6, 2),
        "total_us": round((observe + process) / requests * 1e6, 2),
    }
