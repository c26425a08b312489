"""Processes, ports and health: the one set of helpers for ``pronto up``, the load tests
and the integration tests.

Start ``pronto serve`` as a child process (it installs signal handlers and forks, which a
caller's process should not inherit), find free loopback ports, wait on ``grpc.health.v1``
or an HTTP endpoint instead of sleeping, and stop a process the way Kubernetes does
(SIGTERM, a grace period, then SIGKILL).
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.settings import ServeSettings

__all__ = [
    "PRONTO",
    "free_port",
    "free_ports",
    "port_block",
    "running",
    "serve_command",
    "spawn_server",
    "stop_process",
    "wait_for_grpc_health",
    "wait_for_http",
    "wait_for_port",
    "wait_until",
]

#: the ``pronto`` command line in this interpreter (also where no console script is on PATH)
PRONTO = [sys.executable, "-m", "pronto_cli"]

Process = subprocess.Popen[Any]


# -- ports ----------------------------------------------------------------------


#: ports this process handed out lately: the kernel may offer a port again once the
#: probing socket is closed, before the program it was picked for has bound it
_HANDED: collections.deque[int] = collections.deque(maxlen=512)


def _hand_out(*ports: int) -> None:
    _HANDED.extend(ports)


def _probe() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that this process
    has not handed out lately."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together while picking), none handed out
    lately by this process."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            port = int(stack.enter_context(_probe()).getsockname()[1])
            if port not in _HANDED:  # a skipped port stays held, so it is not offered again
                ports.append(port)
        _hand_out(*ports)
        return ports


def port_block(count: int, attempts: int = 100) -> int:
    """First port of ``count`` consecutive free ports (for per-worker ports), none handed
    out lately by this process."""
    for _ in range(attempts):
        with _probe() as probe:
            base = int(probe.getsockname()[1])
        if base + count > 65535 or any(p in _HANDED for p in range(base, base + count)):
            continue
        try:
            with contextlib.ExitStack() as stack:
                for p in range(base, base + count):
                    s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        _hand_out(*range(base, base + count))
        return base
    raise RuntimeError(f"no block of {count} free ports found")


# -- waiting ----------------------------------------------------------------------


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float,
    procs: Sequence[Process] = (),
    interval: float = 0.1,
) -> None:
    """Poll ``check`` until it holds; fail early when one of ``procs`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        if check():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not ready after {timeout:g}s")
        time.sleep(interval)


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    def listening() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_until(listening, f"{host}:{port}", timeout, interval=0.05)


def wait_for_grpc_health(
    address: str,
    service: str = "",
    timeout: float = 60.0,
    proc: Process | None = None,
) -> None:
    """Block until ``grpc.health.v1`` reports SERVING for ``service`` at ``address``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    last: object = None
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            nonlocal last
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
            except grpc.RpcError as exc:
                last = exc.code()
                return False
            last = reply.status
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        try:
            wait_until(
                serving, f"{address} ({service or 'server'})", timeout, [proc] if proc else ()
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc} (last: {last})") from None


def wait_for_http(
    port: int,
    path: str = "/",
    timeout: float = 60.0,
    proc: Process | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Block until ``GET path`` answers 200."""

    def ok() -> bool:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", path)
            return conn.getresponse().status == 200
        except OSError:
            return False

    wait_until(ok, f"http://{host}:{port}{path}", timeout, [proc] if proc else (), interval=0.2)


# -- processes --------------------------------------------------------------------


def stop_process(proc: Process, timeout: float = 30.0) -> int:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


@contextlib.contextmanager
def running(cmd: Sequence[str], **popen: Any) -> Iterator[Process]:
    """Run ``cmd`` for the duration of the block, stopping it afterwards."""
    proc = subprocess.Popen(list(cmd), **popen)
    try:
        yield proc
    finally:
        stop_process(proc)


def serve_command(settings: ServeSettings) -> list[str]:
    """The ``pronto serve ...`` command line for the fields set in ``settings``."""
    cmd = [*PRONTO, "serve"]
    for name, value in settings.model_dump(exclude_unset=True).items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            cmd.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, list):
            cmd += [flag, *map(str, value)]
        elif isinstance(value, dict):
            import json

            cmd += [flag, json.dumps(value)]
        else:
            cmd += [flag, str(value)]
    return cmd


def spawn_server(settings: ServeSettings, **popen: Any) -> Process:
    """Start ``pronto serve`` as a child process; stop it with SIGTERM (it drains, exits 0)."""
    env = popen.pop("env", None) or dict(os.environ)
    return subprocess.Popen(serve_command(settings), env=env, **popen)
