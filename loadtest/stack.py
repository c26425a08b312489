"""Start the server (and Envoy) for a benchmark when no address is given."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pronto_cli.procs import (
    PRONTO,
    free_port,
    port_block,
    stop_process,
    wait_for_grpc_health,
    wait_for_http,
)

__all__ = ["Stack", "local_stack"]


@dataclass
class Stack:
    """Where the load goes, and which processes to measure."""

    grpc: str
    envoy: str | None = None
    server_pids: list[int] = field(default_factory=list)
    metrics: str | None = None
    #: the first worker's own port (the rest follow it), for a gateway started elsewhere
    worker_base_port: int = 0


@contextlib.contextmanager
def local_stack(
    model_repository: Path, workers: int, gateway: bool, log_dir: Path
) -> Iterator[Stack]:
    """Server on free ports (plus Envoy in front when ``gateway``), stopped on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port, metrics_port, base = free_port(), free_port(), port_block(workers)
    server_cmd = [
        *PRONTO,
        "serve",
        "--model-repository",
        str(model_repository),
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--worker-base-port",
        str(base),
        "--metrics-port",
        str(metrics_port),
    ]
    procs: list[subprocess.Popen] = []
    try:
        with (log_dir / "server.log").open("wb") as log:
            server = subprocess.Popen(server_cmd, stdout=log, stderr=subprocess.STDOUT)
        procs.append(server)
        wait_for_grpc_health(f"127.0.0.1:{port}", timeout=90, proc=server)
        envoy = None
        if gateway:
            listen, admin, stats = free_port(), free_port(), free_port()
            gateway_cmd = [
                *PRONTO,
                "gateway",
                "--listen-port",
                str(listen),
                "--admin-port",
                str(admin),
                "--stats-port",
                str(stats),
                "--workers",
                str(workers),
                "--worker-base-port",
                str(base),
                "--upstream-host",
                "127.0.0.1",
            ]
            with (log_dir / "envoy.log").open("wb") as log:
                gateway_proc = subprocess.Popen(gateway_cmd, stdout=log, stderr=subprocess.STDOUT)
            procs.append(gateway_proc)
            wait_for_http(listen, "/v2/health/ready", proc=gateway_proc)
            envoy = f"127.0.0.1:{listen}"
        yield Stack(f"127.0.0.1:{port}", envoy, [server.pid], f"127.0.0.1:{metrics_port}", base)
    finally:
        for proc in reversed(procs):
            stop_process(proc)
