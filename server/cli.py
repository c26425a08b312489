"""The ``pronto`` command line: one entry point, one subcommand per component.

Each component registers its own subcommand from a small module that imports
its heavy dependencies only when the command runs, so ``pronto --help`` works
in a serving image that lacks the training libraries.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "build_parser", "main"]

#: subcommand name -> module exposing ``register(subparsers)``
COMMANDS: dict[str, str] = {
    "train": "trainer.cli",
    "serve": "server.serve_cmd",
    "gateway": "gateway.cli",
    "up": "server.up",
    "bench": "loadtest.cli",
    "predict": "server.client",
    "rollout": "server.rollout_cmd",
    "dataset": "trainer.dataset",
    "synth": "trainer.synth",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pronto",
        description="Serve scikit-learn models over gRPC and REST, from training data "
        "to a monitored deployment.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except NotImplementedError as exc:
        print(f"pronto {args.command}: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
