"""``python -m loadtest.chaos``: run the faults, print the table, fail on lost requests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadtest.chaos import CRASH, FAULTS, OVERLOAD, ChaosConfig
from loadtest.chaos.report import failed, table, update_doc, write
from loadtest.chaos.stack import prepare_repository
from loadtest.runner import machine_description

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.chaos", description=__doc__)
    parser.add_argument("--faults", nargs="+", choices=sorted(FAULTS), default=list(FAULTS))
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per fault")
    parser.add_argument("--kill-interval", type=float, default=2.0, help="seconds between kills")
    parser.add_argument("--workers", type=int, default=2, help="workers per server instance")
    parser.add_argument("--concurrency", type=int, default=16, help="ghz concurrent calls")
    parser.add_argument("--rps", type=int, default=0, help="ghz request rate (0: unlimited)")
    parser.add_argument("--rest-connections", type=int, default=16, help="wrk, kill -9 fault")
    parser.add_argument("--overload-connections", type=int, default=512)
    parser.add_argument("--overload-duration", type=float, default=20.0, help="seconds per run")
    parser.add_argument(
        "--doc", type=Path, default=ROOT / "docs" / "reliability.md",
        help="Markdown file whose crash/overload tables are replaced ('' = none)",
    )  # fmt: skip
    parser.add_argument("--deadline", type=float, default=0.2, help="client deadline, slow model")
    parser.add_argument("--slow-delay", type=float, default=0.5, help="slow model seconds/request")
    parser.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results" / "chaos")
    parser.add_argument(
        "--model-repository", type=Path, default=None,
        help="repository holding flight-delay (default: train a small one under --out)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    repository = args.model_repository or prepare_repository(args.out / "logs" / "train")
    cfg = ChaosConfig(
        repository=repository.resolve(),
        out=args.out.resolve(),
        duration_s=args.duration,
        kill_interval_s=args.kill_interval,
        workers=args.workers,
        concurrency=args.concurrency,
        rps=args.rps or 0,
        deadline_s=args.deadline,
        slow_delay_s=args.slow_delay,
        rest_connections=args.rest_connections,
        overload_connections=args.overload_connections,
        overload_duration_s=args.overload_duration,
    )
    results = []
    for name in args.faults:
        print(f"fault: {name} ...", flush=True)
        results.append(FAULTS[name](cfg))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    machine = ", ".join(f"{k}: {v}" for k, v in machine_description().items())
    path = write(results, cfg.out, machine)
    print(f"\n{table(results)}\n\n(written to {path})")
    if str(args.doc) and args.doc.is_file():
        for section, names in (("crash", CRASH), ("overload", OVERLOAD)):
            rows = [r for name, r in zip(args.faults, results, strict=True) if name in names]
            if rows:
                update_doc(args.doc, section, rows, machine, cfg)
                print(f"({section} table written to {args.doc})")
    if failed(results):
        print("FAILED: a fault lost requests or broke its check", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
