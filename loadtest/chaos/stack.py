"""Real processes for the fault runs: server instances, one Envoy in front of all of them.

Each instance gets its own shared port but its private worker ports are consecutive with
the previous instance's, so one ``pronto gateway --workers (instances x workers)`` covers
every worker of every instance without any change to the renderer.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from loadtest.stack import free_port, port_block, wait_healthy
from server.launch import spawn_server
from server.settings import ServeSettings
from server.template import worker_processes

__all__ = ["Gateway", "Instance", "port_block", "prepare_repository"]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "flight-delay"


def prepare_repository(root: Path, rows: int = 4000) -> Path:
    """A model repository holding the default flight-delay model (trained once, ~10 s)."""
    models = root / "models"
    if (models / MODEL).is_dir():
        return models
    root.mkdir(parents=True, exist_ok=True)
    csv = root / "flights.csv"
    gen = [sys.executable, "-m", "trainer", "generate", "--out", str(csv), "--rows", str(rows)]
    subprocess.run(gen, check=True, cwd=ROOT, capture_output=True)
    train = [sys.executable, "-m", "server.cli", "train", "--data", str(csv)]
    train += ["--model-repository", str(models)]
    subprocess.run(train, check=True, cwd=ROOT, capture_output=True)
    return models


@dataclass
class Instance:
    """One ``pronto serve`` (a supervisor and its workers) on fixed ports, restartable."""

    repository: Path
    workers: int
    base_port: int
    log: Path
    extra: dict[str, object] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        settings = ServeSettings(
            model_repository=self.repository,
            workers=self.workers,
            host="127.0.0.1",
            port=self.port,
            worker_base_port=self.base_port,
            **({"metrics_port": 0} | self.extra),  # type: ignore[arg-type]
        )
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = spawn_server(settings, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.wait_ready()

    def wait_ready(self, timeout: float = 90.0) -> None:
        for i in range(self.workers):
            wait_healthy(f"127.0.0.1:{self.base_port + i}", timeout=timeout, proc=self.proc)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        with contextlib.suppress(psutil.Error):
            return sorted(p.pid for p in worker_processes(psutil.Process(self.pid)))
        return []

    def drain(self, timeout: float = 60.0) -> tuple[int, float]:
        """SIGTERM and wait: (exit status, seconds the drain took)."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        return rc, time.monotonic() - start

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.drain(30.0)


@dataclass
class Gateway:
    """``pronto gateway`` over ``workers`` consecutive private ports from ``base_port``."""

    base_port: int
    workers: int
    log: Path
    flags: list[str] = field(default_factory=list)
    listen: int = field(default_factory=free_port)
    admin: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.listen}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "server.cli", "gateway", "--listen-address", "127.0.0.1"]
        cmd += ["--listen-port", str(self.listen), "--admin-port", str(self.admin)]
        cmd += ["--stats-port", "0", "--workers", str(self.workers)]
        cmd += ["--worker-base-port", str(self.base_port), "--upstream-host", "127.0.0.1"]
        cmd += ["--envoy-concurrency", "2", *self.flags]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.wait_healthy(self.workers)

    def healthy_endpoints(self) -> int:
        url = f"http://127.0.0.1:{self.admin}/clusters"
        with urllib.request.urlopen(url, timeout=2) as reply:
            text = reply.read().decode()
        return sum(
            1
            for line in text.splitlines()
            if line.startswith("workers::") and line.endswith("::health_flags::healthy")
        )

    def wait_healthy(self, count: int, timeout: float = 60.0) -> float:
        """Block until Envoy's health checks see ``count`` healthy workers; seconds waited."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}")
            with contextlib.suppress(OSError):
                if self.healthy_endpoints() >= count:
                    return time.monotonic() - start
            time.sleep(0.1)
        raise TimeoutError(f"Envoy does not see {count} healthy workers after {timeout}s")

    def wait_unhealthy(self, count: int, timeout: float = 15.0) -> float:
        """Block until Envoy sees fewer than ``count`` healthy workers; seconds waited."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            with contextlib.suppress(OSError):
                if self.healthy_endpoints() < count:
                    return time.monotonic() - start
            time.sleep(0.05)
        raise TimeoutError(f"Envoy still sees {count} healthy workers after {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
