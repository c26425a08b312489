"""``python -m trainer``: the trainer's commands without the rest of the ``pronto`` CLI.

The DVC pipeline calls these, so it runs wherever the training extras are installed:
``generate`` (synthetic flights CSV), ``train`` (same flags as ``pronto train``), ``evaluate``
(metrics and report of a model folder), ``gate`` (candidate against production on the same
held-out rows) and ``publish`` (copy a model folder into the repository
as the next version).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer import cli, evaluate, flights, gate


def _register_publish(subparsers: Any) -> None:
    parser = subparsers.add_parser("publish", help="Publish a model folder as the next version.")
    parser.add_argument("model", type=Path, help="folder with model.onnx and model.json")
    parser.add_argument("--name", default="flight-delay")
    parser.add_argument("--model-repository", type=Path, default=Path("models"))
    parser.set_defaults(handler=_publish)


def _publish(args: argparse.Namespace) -> int:
    from trainer.repository import publish_dir

    version, folder = publish_dir(args.model, args.model_repository, args.name)
    print(f"published {args.name} version {version} to {folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    flights.register(sub)
    cli.register(sub)
    evaluate.register(sub)
    gate.register(sub)
    _register_publish(sub)
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
