"""`pronto serve`: Run the multi-process gRPC inference server."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="Run the multi-process gRPC inference server.",
        description="Run the multi-process gRPC inference server.",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    raise NotImplementedError("not implemented yet")
