"""Request forms side by side through the ``pronto`` client: raw vs typed OIP, and Predict.

    python -m tests.client.bench [--rows 1 256] [--rounds 5] [--calls 400]

Not a test. Starts a one-worker server on free ports (the gateway tests' model: one
categorical and one numeric input), then alternates the forms in rounds so that the load
of a shared machine falls on all of them alike, and prints the median calls per second of
each form per batch size, with its ratio to raw OIP.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

import pronto
from tests.gateway.harness import run_server
from tests.gateway.modelgen import CARRIERS, MODEL, build_repository


def _frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "carrier": [CARRIERS[i % 3] for i in range(rows)],
            "hour": [float(i % 24) for i in range(rows)],
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory() as tmp,
        run_server(build_repository(Path(tmp)), workers=1) as srv,
        pronto.Client(f"127.0.0.1:{srv.port}") as client,
    ):
        for rows in args.rows:
            frame = _frame(rows)
            arrays = {
                "carrier": frame["carrier"].to_numpy().astype(str).reshape(-1, 1),
                "hour": frame["hour"].to_numpy(dtype="float32").reshape(-1, 1),
            }
            records = frame.to_dict("records")
            forms: dict[str, Callable[[], object]] = {
                "oip raw": lambda a=arrays: client.infer(MODEL, a, raw=True),
                "oip typed": lambda a=arrays: client.infer(MODEL, a, raw=False),
                "predict": lambda r=records: client.predict(MODEL, r),
            }
            rates: dict[str, list[float]] = {name: [] for name in forms}
            for call in forms.values():
                call()  # warm up
            for _ in range(args.rounds):
                for name, call in forms.items():
                    started = time.perf_counter()
                    for _ in range(args.calls):
                        call()
                    rates[name].append(args.calls / (time.perf_counter() - started))
            base = statistics.median(rates["oip raw"])
            for name, values in rates.items():
                median = statistics.median(values)
                print(f"rows={rows:<4} {name:10s} {median:8.0f} calls/s  x{median / base:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
