"""CPU cost of drift bookkeeping for 256-row requests, in process: bucket counting by value
(the plain rule) against the vectorised count the server uses, every row counted; a sample
of every large request's rows; and the server's default: a sample of every 8th large
request, the scores of the others.

    python -m loadtest.drift_cost [--rounds 7]

Trains the flight-delay model on 20,000 generated flights into a temporary repository,
decodes the 32 distinct 256-row Predict bodies of ``loadtest/data/rest_predict_b256.jsonl``
into model inputs, runs the model once per body, then times the drift monitor binning all
32 requests (what the metrics timer does) with each counting rule and sampling, alternating,
best of the rounds, in process CPU time; ONNX Runtime's run of one body is timed alongside
for scale.

Then one binning pass over as many rows as a worker may hold between two flushes, for
several sizes up to a second of 256-row traffic on one worker: its CPU time (how long it
holds the worker's event loop) and the most memory it allocates on the way (tracemalloc),
beside the bound the server bins at (``server.drift.MAX_PENDING_ROWS``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import timeit
import tracemalloc
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from pronto_contract import version_dir

__all__ = ["PASS_ROWS", "main", "measure", "passes", "requests"]

DATA = Path(__file__).resolve().parent / "data" / "rest_predict_b256.jsonl"
#: rows binned in one pass: up to about a second of one worker's 256-row traffic
PASS_ROWS = (4_096, 16_384, 65_536, 131_072)


def requests(repo: Path) -> tuple[Any, list[dict[str, np.ndarray]], list[np.ndarray]]:
    """The flight-delay model of ``repo``, the 32 bodies' model inputs and their scores."""
    from server.features import columns_from_instances
    from server.model import load_model

    handle = load_model("flight-delay", 1, version_dir(repo, "flight-delay", 1))
    bodies = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    feeds = [columns_from_instances(handle.features, b["instances"]) for b in bodies]
    outputs = [handle.label_output or "", handle.proba_output or ""]
    probas = [handle.run(f, outputs)[1] for f in feeds]
    return handle, feeds, probas


def measure(repo: Path, rounds: int = 7) -> dict[str, float]:
    """µs of CPU per 256-row request: drift with each counting rule, and the model run."""
    from server.drift import SAMPLE_REQUESTS, SAMPLE_ROWS, DriftMonitor
    from server.monitoring.buckets import FeatureBuckets

    handle, feeds, probas = requests(repo)
    outputs = [handle.label_output or "", handle.proba_output or ""]

    def drift(monitor: DriftMonitor) -> None:
        for f, p in zip(feeds, probas, strict=True):
            monitor.observe(handle, f, p, len(p))
        monitor.process()

    # name -> (counting rule, rows sampled per large request: 0 = every row, and of the
    # large requests, which give a sample: every n-th)
    sample = f"drift, {SAMPLE_ROWS}-row sample"
    rules: dict[str, Any] = {
        "drift, every row, plain count": (FeatureBuckets.count_plain, 0, 1),
        "drift, every row, vectorised count": (FeatureBuckets.count, 0, 1),
        f"{sample} of every request": (FeatureBuckets.count, SAMPLE_ROWS, 1),
        f"{sample} of every {SAMPLE_REQUESTS}th request, scores of the others (the default)": (
            FeatureBuckets.count,
            SAMPLE_ROWS,
            SAMPLE_REQUESTS,
        ),
    }
    monitors = {
        name: DriftMonitor(export=False, sample_rows=rows, sample_requests=every)
        for name, (_, rows, every) in rules.items()
    }
    for monitor in monitors.values():
        monitor.register(handle)
    vectorised = FeatureBuckets.count
    best = dict.fromkeys([*rules, "ONNX Runtime run"], float("inf"))
    try:
        for _ in range(rounds):
            for name, (rule, _, _) in rules.items():
                FeatureBuckets.count = rule  # type: ignore[method-assign]
                run = partial(drift, monitors[name])
                t = timeit.timeit(run, number=3, timer=time.process_time) / 3 / len(feeds)
                best[name] = min(best[name], t)
            t = timeit.timeit(
                lambda: handle.run(feeds[0], outputs), number=20, timer=time.process_time
            )
            best["ONNX Runtime run"] = min(best["ONNX Runtime run"], t / 20)
    finally:
        FeatureBuckets.count = vectorised  # type: ignore[method-assign]
    return {name: round(t * 1e6, 1) for name, t in best.items()}


def passes(
    handle: Any,
    feeds: Sequence[Mapping[str, np.ndarray]],
    probas: Sequence[np.ndarray],
    sizes: Sequence[int] = PASS_ROWS,
    rounds: int = 3,
) -> list[dict[str, float]]:
    """Per size, one binning pass over that many rows of the given requests (cycled, each
    request's arrays copied so that no two are the same object), gathered as the server
    gathers them but with its bound lifted for the run: ms of CPU (best of ``rounds``) and
    the peak of what the pass allocates, in MiB."""
    from server import drift

    out = []
    bound, per = drift.MAX_PENDING_ROWS, len(probas[0])
    try:
        for rows in sizes:
            count = max(1, rows // per)
            items = [
                ({k: v.copy() for k, v in feeds[i % len(feeds)].items()}, probas[i % len(probas)])
                for i in range(count)
            ]
            drift.MAX_PENDING_ROWS = count * per + 1  # one pass for all of them
            monitor = drift.DriftMonitor(export=False, sample_rows=0)  # every row held
            monitor.register(handle)
            best, peak = float("inf"), 0
            for round_ in range(rounds + 1):
                for f, p in items:
                    monitor.observe(handle, f, p, len(p))
                if round_ == rounds:  # the last pass, traced apart from the timed ones
                    tracemalloc.start()
                    monitor.process()
                    peak = tracemalloc.get_traced_memory()[1]
                    tracemalloc.stop()
                    break
                start = time.process_time()
                monitor.process()
                best = min(best, time.process_time() - start)
            out.append({"rows": count * per, "ms": best * 1e3, "peak_mib": peak / 2**20})
    finally:
        drift.MAX_PENDING_ROWS = bound
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.drift_cost",
        description=__doc__.split("\n\n")[0] if __doc__ else "",
    )
    parser.add_argument("--rounds", type=int, default=7, help="Alternating rounds.")
    args = parser.parse_args(argv)
    from trainer.flights import write_flights_csv
    from trainer.settings import TrainSettings
    from trainer.train import train

    with tempfile.TemporaryDirectory(prefix="pronto-drift-") as tmp:
        csv = write_flights_csv(Path(tmp) / "flights.csv", rows=20_000, seed=2017)
        repo = Path(tmp) / "models"
        train(TrainSettings(data=csv, model_repository=repo), log=lambda _: None)
        costs = measure(repo, args.rounds)
        handle, feeds, probas = requests(repo)
        sizes = passes(handle, feeds, probas)
    print("| per 256-row request, in process | µs of CPU |\n| --- | ---: |")
    for name, us in costs.items():
        print(f"| {name} | {us} |")
    from server.drift import MAX_PENDING_ROWS

    print(f"\nOne binning pass (the server bins once {MAX_PENDING_ROWS:,} rows wait):\n")
    print("| rows in the pass | ms of CPU | µs per 256 rows | peak allocated MiB |")
    print("| ---: | ---: | ---: | ---: |")
    for row in sizes:
        per_256 = row["ms"] * 1e3 * 256 / row["rows"]
        print(f"| {row['rows']:,} | {row['ms']:.2f} | {per_256:.0f} | {row['peak_mib']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
