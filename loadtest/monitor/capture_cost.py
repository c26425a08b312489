"""CPU a worker spends on payload capture per request, measured in-process, next to drift.

Like :mod:`loadtest.monitor.drift_cost`: the benchmark's own Predict requests are scored once,
then each variant is timed on the same served requests, alternating rounds and keeping the
best of each (as ``timeit`` does): the request-path ``record`` and the writer's ``flush``
(prediction index in SQLite, sampled CloudEvents to JSON lines) amortised over the requests
it covers.

    python -m loadtest.monitor.capture_cost --models models --data loadtest/data/predict.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtest.monitor.drift_cost import _handle

__all__ = ["capture_cpu_per_request"]


def capture_cpu_per_request(
    model_repository: Path,
    data_file: Path,
    requests: int = 3000,
    repeats: int = 5,
    sample_rates: tuple[float, ...] = (0.1, 1.0),
) -> dict[str, Any]:
    """Microseconds per request of capture (per sample rate) and of drift, measured together."""
    from server.capture import CaptureConfig, CaptureSink
    from server.drift import DriftMonitor
    from server.features import columns_from_instances
    from server.labels import LabelStore

    bodies = json.loads(data_file.read_text())
    handle = _handle(model_repository, bodies[0]["name"])
    served = []
    for i in range(requests):
        instances = bodies[i % len(bodies)]["instances"]
        feeds = columns_from_instances(handle.features, instances)
        label, proba = handle.run(feeds, [handle.label_output, handle.proba_output])
        served.append((f"bench-{i}", feeds, label, proba, len(instances)))
    best: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="capture-cost-"))
    try:
        for r in range(repeats):
            for rate in sample_rates:
                directory = tmp / f"r{r}-{rate}"
                LabelStore(directory).create()
                sink = CaptureSink(CaptureConfig(directory, sample_rate=rate, buffer=requests + 1))
                t0 = time.perf_counter()
                for pid, feeds, label, proba, rows in served:
                    sink.record(pid, handle, feeds, label, proba, rows)
                t1 = time.perf_counter()
                sink.flush()
                t2 = time.perf_counter()
                sink.close()
                for key, value in (
                    (f"capture_{rate}_record", t1 - t0),
                    (f"capture_{rate}_flush", t2 - t1),
                ):
                    best[key] = min(best.get(key, float("inf")), value)
            monitor = DriftMonitor(export=False)
            monitor.register(handle)
            t0 = time.perf_counter()
            for _, feeds, _, proba, rows in served:
                monitor.observe(handle, feeds, proba, rows)
            t1 = time.perf_counter()
            monitor.process()
            t2 = time.perf_counter()
            for key, value in (("drift_observe", t1 - t0), ("drift_process", t2 - t1)):
                best[key] = min(best.get(key, float("inf")), value)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out: dict[str, Any] = {k: round(v / requests * 1e6, 2) for k, v in best.items()}
    for rate in sample_rates:
        out[f"capture_{rate}_total"] = round(
            out[f"capture_{rate}_record"] + out[f"capture_{rate}_flush"], 2
        )
    out["drift_total"] = round(out["drift_observe"] + out["drift_process"], 2)
    out["requests"] = requests
    out["rows_per_request"] = served[0][4]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--data", type=Path, default=Path("loadtest/data/predict.json"))
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(capture_cpu_per_request(args.models, args.data, args.requests, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
