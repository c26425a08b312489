"""Side by side: the worker on uvloop and on asyncio's own loop, and the bare grpc.aio floor
on each.

    python -m loadtest.event_loop [--model-repository models] [--seconds 3] [--rounds 8]

Starts four single-process servers of the working tree (``pronto serve --workers 1
--event-loop asyncio|uvloop`` and ``loadtest.compare.bare_server --event-loop ...``) and
drives each with the same single-row ModelInfer bytes through h2load, in rounds whose
order alternates, reading each server's CPU time (the measurement of
:mod:`loadtest.revisions`). Prints the table and the medians of the per-round ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from pathlib import Path

from loadtest.compare.run import bare_floor
from loadtest.revisions import Servers, measure, serve, table
from loadtest.runner import DATA_DIR

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
LOOPS = ("asyncio", "uvloop")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="flight-delay")
    parser.add_argument("--request", type=Path, default=DATA_DIR / "oip.json")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)
    request = json.loads(args.request.read_text())[0]
    request["model_name"] = args.model
    with contextlib.ExitStack() as stack:
        servers: Servers = {}
        for loop in LOOPS:
            servers[f"pronto-{loop}"] = stack.enter_context(
                serve(ROOT, args.model_repository, args.model, "--event-loop", loop)
            )
        for loop in LOOPS:
            servers[f"bare-{loop}"] = stack.enter_context(bare_floor(1, event_loop=loop))
        found = measure(servers, args.seconds, args.rounds, request)
    print(table(found["rps"], found["cpu_us_per_request"]))
    rps, cpu = found["rps"], found["cpu_us_per_request"]
    for a, b in (
        ("pronto-uvloop", "pronto-asyncio"),
        ("bare-uvloop", "bare-asyncio"),
        ("pronto-asyncio", "bare-asyncio"),
        ("pronto-uvloop", "bare-asyncio"),
    ):
        r = statistics.median(x / y for x, y in zip(rps[a], rps[b], strict=True))
        c = statistics.median(x / y for x, y in zip(cpu[a], cpu[b], strict=True))
        print(f"{a} / {b}: requests/s {r:.2f}, CPU per request {c:.2f} (medians of rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
