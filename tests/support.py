"""Helpers for integration tests that run real processes."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = [
    "free_port",
    "free_port_block",
    "free_ports",
    "running",
    "stop_process",
    "wait_for_grpc_health",
    "wait_for_port",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together while picking)."""
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]


def free_port_block(count: int, attempts: int = 50) -> int:
    """First port of ``count`` consecutive free ports (for per-worker ports)."""
    for _ in range(attempts):
        base = free_port()
        if base + count > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for p in range(base, base + count):
                    s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no block of {count} free ports found")


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def wait_for_grpc_health(
    address: str,
    service: str = "",
    timeout: float = 60.0,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until ``grpc.health.v1`` reports SERVING for ``service``."""
    deadline = time.monotonic() + timeout
    last: object = None
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before becoming healthy")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = reply.status
            except grpc.RpcError as exc:
                last = exc.code()
            time.sleep(0.1)
    raise TimeoutError(f"{address} not SERVING for {service!r} after {timeout}s (last: {last})")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, wait, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


@contextlib.contextmanager
def running(cmd: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` for the duration of the block, stopping it afterwards."""
    proc = subprocess.Popen(cmd, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        stop_process(proc)
