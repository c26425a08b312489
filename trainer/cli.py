"""`pronto train`: Train a model from a CSV and publish it to the model repository."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="Train a model from a CSV and publish it to the model repository.",
        description="Train a model from a CSV and publish it to the model repository.",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    raise NotImplementedError("not implemented yet")
