"""CPU a worker spends on payload capture per request, measured in-process, next to drift.

The benchmark's own Predict requests are scored once, then capture (per sample rate) and
drift are timed on the same served requests, alternating rounds and keeping the best of each
(:mod:`loadtest.monitor.path_cost`): the request-path ``record`` and the writer's ``flush``
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.monitor.drift_cost import drift_variant
from loadtest.monitor.path_cost import Served, best_times, per_request_us, served_requests, timed

__all__ = ["capture_cpu_per_request", "capture_variant"]


def capture_variant(
    handle: Any, served: list[Served], rate: float, scratch: Path
) -> Callable[[], dict[str, float]]:
    """One pass of the capture path at ``rate`` into a fresh directory under ``scratch``:
    ``capture_<rate>_record`` (request path) and ``capture_<rate>_flush`` (writer)."""
    from pronto_contract.labels import LabelStore
    from server.capture import CaptureConfig, CaptureSink

    passes = iter(range(1 << 30))

    def run() -> dict[str, float]:
        directory = scratch / f"{rate}-{next(passes)}"
        LabelStore(directory).create()
        sink = CaptureSink(CaptureConfig(directory, sample_rate=rate, buffer=len(served) + 1))

        def record() -> None:
            for s in served:
                sink.record(s.prediction_id, handle, s.feeds, s.label, s.proba, s.rows)

        try:
            return timed((f"capture_{rate}_record", record), (f"capture_{rate}_flush", sink.flush))
        finally:
            sink.close()

    return run


def capture_cpu_per_request(
    model_repository: Path,
    data_file: Path,
    requests: int = 3000,
    repeats: int = 5,
    sample_rates: tuple[float, ...] = (0.1, 1.0),
) -> dict[str, Any]:
    """Microseconds per request of capture (per sample rate) and of drift, measured together."""
    handle, served = served_requests(model_repository, data_file, requests)
    scratch = Path(tempfile.mkdtemp(prefix="capture-cost-"))
    try:
        variants = [capture_variant(handle, served, rate, scratch) for rate in sample_rates]
        best = best_times([*variants, drift_variant(handle, served)], repeats)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out: dict[str, Any] = per_request_us(best, requests)
    for rate in sample_rates:
        out[f"capture_{rate}_total"] = round(
            out[f"capture_{rate}_record"] + out[f"capture_{rate}_flush"], 2
        )
    out["drift_total"] = round(out["drift_observe"] + out["drift_process"], 2)
    out["requests"] = requests
    out["rows_per_request"] = served[0].rows
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
