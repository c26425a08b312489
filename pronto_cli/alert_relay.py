"""`pronto alert-relay`: Alertmanager webhook in, GitHub repository_dispatch out."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pronto_cli.flags import add_settings_arguments, settings_from_args

__all__ = ["register"]

_HELP = "Relay firing Alertmanager alerts to GitHub as repository_dispatch (retraining)."


def register(subparsers: Any) -> None:
    from server.monitoring.alert_relay import AlertRelaySettings

    parser = subparsers.add_parser(
        "alert-relay",
        help=_HELP,
        description=_HELP + " Listens for webhooks on POST /webhook; GET /healthz, /metrics.",
    )
    add_settings_arguments(parser, AlertRelaySettings)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from server.monitoring.alert_relay import AlertRelaySettings, serve

    try:
        return serve(settings_from_args(AlertRelaySettings, args))
    except (ValidationError, ValueError, OSError) as exc:
        print(f"pronto alert-relay: {exc}", file=sys.stderr)
        return 2
