"""`pronto serve`: Run the multi-process gRPC inference server."""

from __future__ import annotations

import argparse
from typing import Any

from pronto_cli.flags import add_settings_arguments, settings_from_args
from server.settings import ServeSettings

__all__ = ["register"]

_HELP = "Run the multi-process gRPC inference server."


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help=_HELP, description=_HELP)
    add_settings_arguments(parser, ServeSettings)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from server.supervisor import serve

    return serve(settings_from_args(ServeSettings, args))
