"""`pronto up`: the whole local stack in one command.

Trains the default model when the repository holds none, starts the server
(supervisor + workers) and Envoy in front of the workers' private ports, and
stops both on Ctrl-C or SIGTERM: Envoy first, then the server, which drains.
Authentication is off here (a local developer stack); the chart turns it on.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.settings_cli import add_settings_arguments, settings_from_args

__all__ = ["UpSettings", "register", "up"]

_HELP = "Run the whole local stack: train if needed, serve, and put Envoy in front."


class UpSettings(BaseSettings):
    """Ports and paths of the local stack."""

    model_config = SettingsConfigDict(env_prefix="PRONTO_", extra="ignore")

    model_repository: Path = Field(Path("models"), description="Model repository root.")
    workers: int = Field(0, ge=0, description="Worker processes; 0 means one per usable CPU.")
    port: int = Field(50051, description="gRPC port shared by all workers.")
    worker_base_port: int = Field(50100, description="Worker i also listens on this port + i.")
    metrics_port: int = Field(9090, description="Port of the server's /metrics endpoint.")
    listen_address: str = Field(
        "127.0.0.1",
        description="Address Envoy listens on; loopback by default because authentication "
        "is off in the local stack.",
    )
    listen_port: int = Field(8080, description="Envoy port for REST and gRPC.")
    admin_port: int = Field(9901, description="Envoy admin port (loopback only).")
    stats_port: int = Field(9902, description="Envoy /stats/prometheus port.")
    startup_timeout: float = Field(180.0, description="Seconds to wait for the stack to be up.")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("up", help=_HELP, description=__doc__)
    add_settings_arguments(parser, UpSettings)
    parser.set_defaults(handler=lambda args: up(settings_from_args(UpSettings, args)))


def _has_model(root: Path) -> bool:
    return any(root.glob("*/[0-9]*/model.onnx"))


def _train_default(root: Path) -> None:
    from trainer.settings import TrainSettings
    from trainer.train import train

    print(f"pronto up: no model in {root}: training the default flight-delay model")
    train(TrainSettings(model_repository=root))


def _wait(check: Any, what: str, procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{what}: a process exited with {p.returncode}")
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


def _envoy_ready(port: int) -> bool:
    import http.client

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/v2/health/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False


def _server_ready(port: int) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def up(settings: UpSettings) -> int:
    from server.launch import spawn_server
    from server.settings import ServeSettings, usable_cpus

    if not _has_model(settings.model_repository):
        _train_default(settings.model_repository)
    workers = settings.workers or usable_cpus()
    serve = ServeSettings(
        model_repository=settings.model_repository,
        workers=workers,
        port=settings.port,
        worker_base_port=settings.worker_base_port,
        metrics_port=settings.metrics_port,
    )
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        server = spawn_server(serve)
        procs.append(server)
        _wait(lambda: _server_ready(settings.port), "server", procs, settings.startup_timeout)
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server.cli",
                "gateway",
                "--workers",
                str(workers),
                "--worker-base-port",
                str(settings.worker_base_port),
                "--listen-address",
                settings.listen_address,
                "--listen-port",
                str(settings.listen_port),
                "--admin-port",
                str(settings.admin_port),
                "--stats-port",
                str(settings.stats_port),
                "--no-require-auth",
            ]
        )
        procs.append(gateway)
        _wait(lambda: _envoy_ready(settings.listen_port), "Envoy", procs, settings.startup_timeout)
        print(
            f"\npronto up: {workers} workers ready\n"
            f"  gRPC     127.0.0.1:{settings.port} (reflection on; Envoy also speaks gRPC)\n"
            f"  REST     http://127.0.0.1:{settings.listen_port}/v2/health/ready\n"
            f"  metrics  http://127.0.0.1:{settings.metrics_port}/metrics\n"
            f"  try      curl -s -X POST http://127.0.0.1:{settings.listen_port}"
            "/v1/models/flight-delay:predict -d @- <<< "
            '\'{"instances": [{"OPERA": "Sky Airline", "TIPOVUELO": "N", '
            '"SIGLADES": "Antofagasta", "DIANOM": "Viernes", "period_of_day": '
            '"afternoon", "MES": 7, "hour": 15, "high_season": 1}]}\'\n'
            "Ctrl-C stops everything.",
            flush=True,
        )
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.2)
        failed = [p for p in procs if p.poll() is not None]
        return 1 if failed and not stopping else 0
    finally:
        for proc in reversed(procs):
            _stop(proc)
