"""`pronto serve`: Run the multi-process gRPC inference server."""

from __future__ import annotations

import argparse
from typing import Any

from server.settings import ServeSettings
from server.settings_cli import add_settings_arguments, settings_from_args

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="Run the multi-process gRPC inference server.",
        description="Run the multi-process gRPC inference server.",
    )
    add_settings_arguments(parser, ServeSettings)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from server.supervisor import serve

    return serve(settings_from_args(ServeSettings, args))
