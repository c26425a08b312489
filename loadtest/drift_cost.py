"""CPU cost of drift bookkeeping for 256-row requests, in process: bucket counting by value
(the plain rule) against the vectorised count the server uses.

    python -m loadtest.drift_cost [--rounds 7]

Trains the flight-delay model on 20,000 generated flights into a temporary repository,
decodes the 32 distinct 256-row Predict bodies of ``loadtest/data/rest_predict_b256.jsonl``
into model inputs, runs the model once per body, then times the drift monitor binning all
32 requests (what the metrics timer does) with each counting rule, alternating, best of the
rounds, in process CPU time; ONNX Runtime's run of one body is timed alongside for scale.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

from pronto_contract import version_dir

__all__ = ["main", "measure"]

DATA = Path(__file__).resolve().parent / "data" / "rest_predict_b256.jsonl"


def measure(repo: Path, rounds: int = 7) -> dict[str, float]:
    """µs of CPU per 256-row request: drift with each counting rule, and the model run."""
    from server.drift import DriftMonitor
    from server.features import columns_from_instances
    from server.model import load_model
    from server.monitoring.buckets import FeatureBuckets

    handle = load_model("flight-delay", 1, version_dir(repo, "flight-delay", 1))
    bodies = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    feeds = [columns_from_instances(handle.features, b["instances"]) for b in bodies]
    outputs = [handle.label_output or "", handle.proba_output or ""]
    probas = [handle.run(f, outputs)[1] for f in feeds]
    monitor = DriftMonitor(export=False)
    monitor.register(handle)

    def drift() -> None:
        for f, p in zip(feeds, probas, strict=True):
            monitor.observe(handle, f, p, len(p))
        monitor.process()

    rules: dict[str, Any] = {
        "drift, plain count": FeatureBuckets.count_plain,
        "drift, vectorised count": FeatureBuckets.count,
    }
    vectorised = FeatureBuckets.count
    best = dict.fromkeys([*rules, "ONNX Runtime run"], float("inf"))
    try:
        for _ in range(rounds):
            for name, rule in rules.items():
                FeatureBuckets.count = rule  # type: ignore[method-assign]
                t = timeit.timeit(drift, number=3, timer=time.process_time) / 3 / len(feeds)
                best[name] = min(best[name], t)
            t = timeit.timeit(
                lambda: handle.run(feeds[0], outputs), number=20, timer=time.process_time
            )
            best["ONNX Runtime run"] = min(best["ONNX Runtime run"], t / 20)
    finally:
        FeatureBuckets.count = vectorised  # type: ignore[method-assign]
    return {name: round(t * 1e6, 1) for name, t in best.items()}


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
    print("| per 256-row request, in process | µs of CPU |\n| --- | ---: |")
    for name, us in costs.items():
        print(f"| {name} | {us} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
