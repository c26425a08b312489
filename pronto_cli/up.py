"""`pronto up`: the whole local stack in one command.

Trains the default model when the repository holds none, starts the server
(supervisor + workers) and Envoy in front of the workers' private ports, and
stops both on Ctrl-C or SIGTERM: Envoy first, then the server, which drains.
Authentication is off here (a local developer stack); the chart turns it on.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pronto_cli.flags import add_settings_arguments, settings_from_args
from pronto_contract.fields import MetricsPort, ModelRepository, Port, WorkerBasePort, Workers

__all__ = ["UpSettings", "register", "up"]

_HELP = "Run the whole local stack: train if needed, serve, and put Envoy in front."

_TRY = (
    "curl -s -X POST http://127.0.0.1:{port}/v1/models/flight-delay:predict -d @- <<< "
    '\'{{"instances": [{{"OPERA": "Sky Airline", "TIPOVUELO": "N", '
    '"SIGLADES": "Antofagasta", "DIANOM": "Viernes", "period_of_day": '
    '"afternoon", "MES": 7, "hour": 15, "high_season": 1}}]}}\''
)


class UpSettings(BaseSettings):
    """Ports and paths of the local stack."""

    model_config = SettingsConfigDict(env_prefix="PRONTO_", extra="ignore")

    model_repository: ModelRepository = Path("models")
    workers: Workers = 0
    port: Port = 50051
    worker_base_port: WorkerBasePort = 50100
    metrics_port: MetricsPort = 9090
    listen_address: str = Field(
        "127.0.0.1",
        description="Address Envoy listens on; loopback by default because authentication "
        "is off in the local stack.",
    )
    listen_port: int = Field(8080, ge=1, le=65535, description="Envoy port for REST and gRPC.")
    admin_port: int = Field(9901, ge=1, le=65535, description="Envoy admin port (loopback only).")
    stats_port: int = Field(9902, ge=0, le=65535, description="Envoy /stats/prometheus port.")
    startup_timeout: float = Field(
        180.0, gt=0, description="Seconds to wait for the stack to be up."
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("up", help=_HELP, description=__doc__)
    add_settings_arguments(parser, UpSettings)
    parser.set_defaults(handler=lambda args: up(settings_from_args(UpSettings, args)))


def _train_default(root: Path) -> None:
    from trainer.settings import TrainSettings
    from trainer.train import train

    print(f"pronto up: no model in {root}: training the default flight-delay model")
    train(TrainSettings(model_repository=root))


def _gateway_command(settings: UpSettings, workers: int) -> list[str]:
    from pronto_cli.procs import PRONTO

    return [
        *PRONTO,
        "gateway",
        "--workers", str(workers),
        "--worker-base-port", str(settings.worker_base_port),
        "--listen-address", settings.listen_address,
        "--listen-port", str(settings.listen_port),
        "--admin-port", str(settings.admin_port),
        "--stats-port", str(settings.stats_port),
        "--no-require-auth",
    ]  # fmt: skip


def _banner(settings: UpSettings, workers: int) -> str:
    return (
        f"\npronto up: {workers} workers ready\n"
        f"  gRPC     127.0.0.1:{settings.port} (reflection on; Envoy also speaks gRPC)\n"
        f"  REST     http://127.0.0.1:{settings.listen_port}/v2/health/ready\n"
        f"  metrics  http://127.0.0.1:{settings.metrics_port}/metrics\n"
        f"  try      {_TRY.format(port=settings.listen_port)}\n"
        "Ctrl-C stops everything."
    )


def _start(settings: UpSettings, workers: int, procs: list[subprocess.Popen[Any]]) -> None:
    """Server first, Envoy once the server is healthy; each appended to ``procs``."""
    from pronto_cli.procs import spawn_server, wait_for_grpc_health, wait_for_http
    from server.settings import ServeSettings

    serve = ServeSettings(
        model_repository=settings.model_repository,
        workers=workers,
        port=settings.port,
        worker_base_port=settings.worker_base_port,
        metrics_port=settings.metrics_port,
    )
    server = spawn_server(serve)
    procs.append(server)
    wait_for_grpc_health(
        f"127.0.0.1:{settings.port}", timeout=settings.startup_timeout, proc=server
    )
    gateway = subprocess.Popen(_gateway_command(settings, workers))
    procs.append(gateway)
    wait_for_http(
        settings.listen_port, "/v2/health/ready", timeout=settings.startup_timeout, proc=gateway
    )


def up(settings: UpSettings) -> int:
    from pronto_cli.procs import stop_process
    from pronto_contract import has_models
    from pronto_contract.fields import usable_cpus

    if not has_models(settings.model_repository):
        _train_default(settings.model_repository)
    workers = settings.workers or usable_cpus()
    procs: list[subprocess.Popen[Any]] = []
    stopping = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        _start(settings, workers, procs)
        print(_banner(settings, workers), flush=True)
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.2)
        failed = [p for p in procs if p.poll() is not None]
        return 1 if failed and not stopping else 0
    finally:
        for proc in reversed(procs):
            stop_process(proc)
