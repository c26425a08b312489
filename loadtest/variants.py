"""This tree served with different ``pronto serve`` flags, side by side.

    python -m loadtest.variants --metrics --request loadtest/data/oip_b256.json \\
        --variant default= --variant every="--drift-sample-requests 1" \\
        --variant off=--no-drift --seconds 3 --rounds 12

Each ``--variant NAME=FLAGS`` is one single-worker server of the working tree with
``FLAGS`` (split as a shell would) added to its command line; the first is the baseline.
They are measured as :mod:`loadtest.revisions` measures revisions: h2load sends the same
``ModelInfer`` bytes (tritonclient's raw form) to each in rounds whose order alternates,
and the tables give requests per second, server CPU microseconds per request and the
median of the per-round ratios to the baseline, then the worker's resident memory. Use it
for what a setting costs, where :mod:`loadtest.revisions` is for what a change costs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

from loadtest.revisions import Servers, add_metrics_argument, measure, rss_table, serve
from loadtest.runner import machine_description
from loadtest.trace_cost import ROOT, add_side_by_side_arguments, ratio_table

__all__ = ["main", "parse_variant", "served"]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=FLAGS`` as a name and its flags (``default=`` has none)."""
    name, sep, flags = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=FLAGS (FLAGS may be empty)")
    return name.strip(), shlex.split(flags)


@contextlib.contextmanager
def served(
    variants: list[tuple[str, list[str]]], repository: Path, model: str, metrics: bool = False
) -> Iterator[Servers]:
    """Each variant served from this tree, by name: its worker's address and the
    supervisor's pid; all stopped when the block ends."""
    names = [name for name, _ in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must differ: {names}")
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(serve(ROOT, repository, model, *flags, metrics=metrics))
            for name, flags in variants
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        required=True,
        metavar="NAME=FLAGS",
        help="a server of this tree with these extra flags (repeat; the first is the baseline)",
    )
    add_side_by_side_arguments(parser, seconds=3.0, rounds=6)
    add_metrics_argument(parser)
    args = parser.parse_args(argv)
    if len(args.variant) < 2:
        parser.error("give at least two --variant")
    request = json.loads(args.request.read_text())[0]
    request["model_name"] = args.model
    with served(args.variant, args.model_repository, args.model, args.metrics) as servers:
        found = measure(servers, args.seconds, args.rounds, request)
    baseline = args.variant[0][0]
    print(ratio_table(found["rps"], found["cpu_us_per_request"], "variant", baseline))
    print(f"\n{rss_table(found['worker_rss_mib'], 'variant')}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            **found,
            "variants": {name: flags for name, flags in args.variant},
            "request": str(args.request),
            "metrics": args.metrics,
            "seconds": args.seconds,
            "command": "python -m loadtest.variants "
            + shlex.join(sys.argv[1:] if argv is None else argv),
            "machine": machine_description(),
        }
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
