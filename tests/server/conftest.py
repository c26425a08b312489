"""Fixtures: a test model repository and real ``pronto serve`` processes on free ports."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.core import InferenceCore
from server.model import ModelHandle
from server.repository import Registry
from tests.server.modelgen import build_repository
from tests.support import (
    free_port,
    free_port_block,
    load_models,
    stop_process,
    wait_for_grpc_health,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("models"))


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    base_port: int
    metrics_port: int
    workers: int
    log: Path
    metrics_dir: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def worker_address(self, i: int) -> str:
        return f"127.0.0.1:{self.base_port + i}"


def start_server(
    repo: Path, log: Path, workers: int = 2, *extra: str, port: int | None = None
) -> Server:
    port, metrics_port = port or free_port(), free_port()
    base = free_port_block(workers)
    metrics_dir = log.parent / f"metrics-{port}"
    cmd = [
        sys.executable, "-m", "pronto_cli", "serve",
        "--model-repository", str(repo),
        "--workers", str(workers),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--worker-base-port", str(base),
        "--metrics-port", str(metrics_port),
        "--metrics-dir", str(metrics_dir),
        "--metrics-flush-interval", "0.2",
        "--model-versions", "2",
        *extra,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRONTO_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, port, base, metrics_port, workers, log, metrics_dir)
    try:
        for i in range(workers):
            wait_for_grpc_health(server.worker_address(i), timeout=60, proc=proc)
    except Exception:
        stop_process(proc)
        print(log.read_text(), file=sys.stderr)
        raise
    return server


@pytest.fixture(scope="module")
def server(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    srv = start_server(model_repo, log)
    yield srv
    stop_process(srv.proc)


@pytest.fixture(scope="module")
def flights_core(model_repo: Path) -> InferenceCore:
    """An in-process core holding the latest ``flights`` model, every batch run inline."""
    registry = Registry()
    registry.replace(load_models(model_repo, latest=1))
    core = InferenceCore(registry, offload_rows=1 << 20)
    core.ready = True
    return core


@pytest.fixture(scope="module")
def flights_handle(flights_core: InferenceCore) -> ModelHandle:
    return flights_core.model("flights")
