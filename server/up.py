"""`pronto up`: Run the whole local stack: train if needed, serve, and put Envoy in front."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "up",
        help="Run the whole local stack: train if needed, serve, and put Envoy in front.",
        description="Run the whole local stack: train if needed, serve, and put Envoy in front.",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    raise NotImplementedError("not implemented yet")
