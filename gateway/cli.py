"""`pronto gateway`: Render the Envoy configuration and run Envoy in front of the workers."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="Render the Envoy configuration and run Envoy in front of the workers.",
        description="Render the Envoy configuration and run Envoy in front of the workers.",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    raise NotImplementedError("not implemented yet")
