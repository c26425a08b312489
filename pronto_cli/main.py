"""``pronto``: parse the command name first, then import only that command's module.

Each subcommand lives in a small module exposing ``register(subparsers)``; it imports its
component's heavy dependencies only when the command runs. The top-level help is built
from the one-line descriptions below, without importing any subcommand module.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


class Command(NamedTuple):
    module: str
    help: str


#: subcommand name -> module exposing ``register(subparsers)``, and its one-line help
COMMANDS: dict[str, Command] = {
    "train": Command(
        "trainer.cli", "Train a model from a CSV and publish it to the model repository."
    ),
    "serve": Command("pronto_cli.serve", "Run the multi-process gRPC inference server."),
    "gateway": Command(
        "gateway.cli", "Render the Envoy configuration and run Envoy in front of the workers."
    ),
    "up": Command(
        "pronto_cli.up",
        "Run the whole local stack: train if needed, serve, and put Envoy in front.",
    ),
    "bench": Command(
        "loadtest.cli", "Run a load-test scenario with ghz/wrk/h2load and write reports."
    ),
    "predict": Command("pronto_cli.predict", "Send a prediction request to a running server."),
    "rollout": Command(
        "pronto_cli.rollout",
        "Shadow and canary releases of a model version: start, promote, abort, status.",
    ),
    "dataset": Command(
        "trainer.dataset", "Join captured inputs with their labels into a training CSV."
    ),
    "alert-relay": Command(
        "pronto_cli.alert_relay",
        "Relay firing Alertmanager alerts to GitHub as repository_dispatch (retraining).",
    ),
    "synth": Command(
        "trainer.synth",
        "Generate synthetic rows like a real CSV (Gaussian copula) with an HTML report.",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (None: none of them)."""
    parser = argparse.ArgumentParser(
        prog="pronto",
        description="Serve scikit-learn models over gRPC and REST, from training data "
        "to a monitored deployment.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        if name == command:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=help_text, description=help_text)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command(argv)
    try:
        parser = build_parser(command)
    except ModuleNotFoundError as exc:
        # e.g. `pronto train` in the serving image, which installs the serve extra only
        print(
            f"pronto {command}: not available in this installation ({exc}); "
            "install the extra it needs, e.g. pip install 'pronto-serving[train]'",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        print(f"pronto {args.command}: not available in this installation ({exc})", file=sys.stderr)
        return 2
    except NotImplementedError as exc:
        print(f"pronto {args.command}: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)
