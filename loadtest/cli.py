"""`pronto bench`: Run a load-test scenario with ghz/wrk and write reports."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="Run a load-test scenario with ghz/wrk and write reports.",
        description="Run a load-test scenario with ghz/wrk and write reports.",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    raise NotImplementedError("not implemented yet")
