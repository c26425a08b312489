"""Build the request files of the load scenarios from the generated flights.

    python -m loadtest.data [--model-repository models] [--model flight-delay]

Rows come from the flight generator with a seed other than the training one,
so the load uses realistic rows the model has not seen, each request
different. Files land in ``loadtest/data/``: ``oip.json`` and ``predict.json``
(ghz, one request per array element), ``rest_oip.jsonl`` (proto3 JSON form),
``rest_oip_data.jsonl`` (the protocol's REST form, values in ``data``) and
``rest_predict.jsonl`` (wrk, one body per line), and ``*_b256`` variants with
256 rows per request.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from loadtest.payloads import build_payloads, write_payloads
from pronto_contract import Manifest, latest_manifest

__all__ = ["build_data", "main"]

DATA_DIR = Path(__file__).resolve().parent / "data"
LOAD_SEED = 4242


def feature_rows(count: int, seed: int = LOAD_SEED, drift: bool = False) -> list[dict[str, Any]]:
    from trainer.features import flight_features
    from trainer.flights import generate_flights

    frame = flight_features(generate_flights(rows=count, seed=seed, drift=drift))
    rows: list[dict[str, Any]] = frame.to_dict(orient="records")
    return rows


def build_data(
    manifest: Manifest, out_dir: Path = DATA_DIR, single: int = 1000, batches: int = 32
) -> dict[str, Path]:
    """Write single-row and 256-row request files; returns their paths."""
    rows = feature_rows(max(single, 256 * batches))
    paths = write_payloads(build_payloads(manifest, rows[:single], 1, single), out_dir, "")
    paths.update(
        {
            f"{k}_b256": v
            for k, v in write_payloads(
                build_payloads(manifest, rows, 256, batches), out_dir, "_b256"
            ).items()
        }
    )
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build load-test request files.")
    parser.add_argument("--model-repository", type=Path, default=Path("models"))
    parser.add_argument("--model", default="flight-delay")
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    for kind, path in sorted(
        build_data(latest_manifest(args.model_repository, args.model), args.out).items()
    ):
        print(f"{kind:16s} {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
