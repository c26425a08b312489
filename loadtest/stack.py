"""Start the server (and Envoy) for a benchmark when no address is given."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["Stack", "free_port", "local_stack", "port_block", "wait_healthy"]


@dataclass
class Stack:
    """Where the load goes, and which processes to measure."""

    grpc: str
    envoy: str | None = None
    server_pids: list[int] = field(default_factory=list)
    metrics: str | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_block(count: int) -> int:
    """First of ``count`` consecutive free ports (held together while checking)."""
    for _ in range(100):
        base = free_port()
        try:
            with contextlib.ExitStack() as stack:
                for p in range(base, base + count):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise RuntimeError("no free block of ports")


def wait_healthy(address: str, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode}")
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.2)
    raise TimeoutError(f"{address} did not become healthy in {timeout}s")


def _wait_http(port: int, path: str, timeout: float = 60.0) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"127.0.0.1:{port}{path} not ready after {timeout}s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def local_stack(
    model_repository: Path, workers: int, gateway: bool, log_dir: Path
) -> Iterator[Stack]:
    """Server on free ports (plus Envoy in front when ``gateway``), stopped on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port, metrics_port, base = free_port(), free_port(), port_block(workers)
    server_cmd = [
        sys.executable,
        "-m",
        "server.cli",
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
        wait_healthy(f"127.0.0.1:{port}", proc=server)
        envoy = None
        if gateway:
            listen, admin, stats = free_port(), free_port(), free_port()
            gateway_cmd = [
                sys.executable,
                "-m",
                "server.cli",
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
                procs.append(subprocess.Popen(gateway_cmd, stdout=log, stderr=subprocess.STDOUT))
            _wait_http(listen, "/v2/health/ready")
            envoy = f"127.0.0.1:{listen}"
        yield Stack(f"127.0.0.1:{port}", envoy, [server.pid], f"127.0.0.1:{metrics_port}")
    finally:
        for proc in reversed(procs):
            _stop(proc)
