"""`pronto predict`: Send a prediction request to a running server."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="Send a prediction request to a running server.",
        description="Send a prediction request to a running server.",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    raise NotImplementedError("not implemented yet")
