"""`pronto bench`: run a load-test scenario with ghz/wrk/h2load and write reports."""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pronto_cli.flags import add_settings_arguments, settings_from_args
from pronto_cli.procs import PRONTO
from pronto_contract.fields import ModelRepository, Workers

__all__ = ["BenchSettings", "register"]

SCENARIOS = (
    "smoke", "challenge", "peak", "batch", "compare", "wide", "rest_columnar", "capture", "profile",
)  # fmt: skip


class BenchSettings(BaseSettings):
    """Where to send the load and where to write the reports."""

    model_config = SettingsConfigDict(env_prefix="PRONTO_", extra="ignore")

    address: str | None = Field(
        None, description="gRPC address of a running server; default: start one on free ports."
    )
    envoy_address: str | None = Field(
        None, description="Address of a running Envoy for REST runs; default: start one."
    )
    model_repository: ModelRepository = Path("models")
    model: str = Field("flight-delay", description="Model the requests are built for.")
    workers: Workers = 0
    results_dir: Path = Field(
        Path("loadtest/results"), description="Where summaries and tool reports go."
    )
    data_dir: Path = Field(
        Path("loadtest/data"), description="Request files (built by python -m loadtest.data)."
    )
    headers: dict[str, str] | None = Field(
        None,
        description="Request headers (gRPC metadata) for every call, as JSON, e.g. "
        '{"x-api-key": "..."} for a gateway with authentication on.',
    )
    update_docs: bool = Field(
        True, description="Regenerate the tables of docs/benchmarks.md from all summaries."
    )


def register(subparsers: Any) -> None:
    help_text = "Run a load-test scenario with ghz/wrk/h2load and write reports."
    parser = subparsers.add_parser("bench", help=help_text, description=help_text)
    parser.add_argument(
        "scenario", help=f"scenario name ({', '.join(SCENARIOS)}, or 'all') or a YAML file"
    )
    add_settings_arguments(parser, BenchSettings)
    parser.set_defaults(handler=_run)


def _ensure_model(settings: BenchSettings) -> None:
    from pronto_contract import list_versions

    with contextlib.suppress(FileNotFoundError):
        if list_versions(settings.model_repository, [settings.model]):
            return
    print(f"no {settings.model!r} in {settings.model_repository}: training the default model")
    subprocess.run(
        [
            *PRONTO,
            "train",
            "--model-repository",
            str(settings.model_repository),
        ],
        check=True,
    )


def _ensure_data(settings: BenchSettings) -> None:
    from loadtest.data import build_data
    from pronto_contract import latest_manifest

    if (settings.data_dir / "oip.json").exists():
        return
    build_data(latest_manifest(settings.model_repository, settings.model), settings.data_dir)


def run_named(name: str, settings: BenchSettings) -> bool:
    """Run one scenario; returns whether every threshold was met."""
    from loadtest.bench import run_bench

    return run_bench(name, settings, " ".join(["pronto", "bench", name]))


def _stop_on_sigterm() -> None:
    """SIGTERM (a CI timeout, ``kill``) unwinds like Ctrl-C: the servers, Envoy and
    Prometheus this run started are stopped on the way out instead of left running."""

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def _run(args: argparse.Namespace) -> int:
    _stop_on_sigterm()
    settings = settings_from_args(BenchSettings, args)
    _ensure_model(settings)
    _ensure_data(settings)
    names = [s for s in SCENARIOS if s != "smoke"] if args.scenario == "all" else [args.scenario]
    ok = True
    for name in names:
        ok = run_named(name, settings) and ok
    return 0 if ok else 1
