"""Run a real `pronto serve` and real Envoys (`pronto gateway`) for the gateway tests."""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import (
    free_port,
    free_port_block,
    free_ports,
    stop_process,
    wait_for_grpc_health,
    wait_for_port,
)

__all__ = [
    "Gateway",
    "Reply",
    "Server",
    "request",
    "run_gateway",
    "run_server",
    "upstream_requests",
]

CLI = [sys.executable, "-m", "pronto_cli"]


@dataclass(frozen=True)
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    base_port: int
    workers: int


@dataclass(frozen=True)
class Gateway:
    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int
    stats_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


@contextlib.contextmanager
def run_server(repository: Path, workers: int = 2, *flags: str) -> Iterator[Server]:
    port, base = free_port(), free_port_block(workers)
    cmd = [
        *CLI, "serve", "--model-repository", str(repository), "--workers", str(workers),
        "--port", str(port), "--worker-base-port", str(base), "--metrics-port", "0",
        "--log-level", "WARNING", *flags,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd)
    try:
        for i in range(workers):
            wait_for_grpc_health(f"127.0.0.1:{base + i}", proc=proc)
        yield Server(proc, port, base, workers)
    finally:
        stop_process(proc)


def _clusters(admin_port: int) -> str:
    url = f"http://127.0.0.1:{admin_port}/clusters"
    with urllib.request.urlopen(url, timeout=2) as reply:
        return str(reply.read().decode())


def upstream_requests(admin_port: int) -> dict[int, int]:
    """Requests Envoy sent to each worker endpoint (health checks excluded)."""
    totals: dict[int, int] = {}
    for line in _clusters(admin_port).splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == "workers" and parts[2] == "rq_total":
            totals[int(parts[1].rsplit(":", 1)[1])] = int(parts[3])
    return totals


def _wait_healthy(gateway: Gateway, workers: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.proc.poll() is not None:
            raise RuntimeError(f"envoy exited with {gateway.proc.returncode}")
        with contextlib.suppress(OSError):
            healthy = _clusters(gateway.admin_port).count("::health_flags::healthy")
            if healthy >= workers:
                return
        time.sleep(0.1)
    raise TimeoutError("workers not healthy behind Envoy")


@contextlib.contextmanager
def run_gateway(
    server: Server | None, *flags: str, workers: int | None = None, healthy: bool = True
) -> Iterator[Gateway]:
    """Envoy in front of ``server``'s private ports (or closed ports when ``server`` is None)."""
    port, admin, stats = free_ports(3)
    count = server.workers if server else workers or 1
    base = server.base_port if server else free_port_block(count)
    cmd = [
        *CLI, "gateway", "--listen-address", "127.0.0.1", "--listen-port", str(port),
        "--admin-port", str(admin), "--stats-port", str(stats), "--workers", str(count),
        "--worker-base-port", str(base), "--envoy-concurrency", "2",
        "--envoy-log-level", "error", *flags,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd)
    gateway = Gateway(proc, port, admin, stats)
    try:
        wait_for_port(port, timeout=30)
        wait_for_port(admin, timeout=30)
        if healthy:
            _wait_healthy(gateway, count)
        yield gateway
    finally:
        stop_process(proc)


def request(
    target: Gateway | http.client.HTTPConnection,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One REST call; ``body`` is JSON-encoded unless it is already bytes."""
    conn = (
        target
        if isinstance(target, http.client.HTTPConnection)
        else http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    )
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    all_headers = {"content-type": "application/json"} if data is not None else {}
    all_headers.update(headers or {})
    try:
        conn.request(method, path, body=data, headers=all_headers)
        reply = conn.getresponse()
        raw = reply.read()
        ctype = reply.getheader("content-type", "")
        parsed = json.loads(raw) if "json" in ctype and raw else raw.decode(errors="replace")
        return Reply(reply.status, {k.lower(): v for k, v in reply.getheaders()}, parsed)
    finally:
        if conn is not target:
            conn.close()
