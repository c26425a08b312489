"""One trained flight model, one server behind Envoy and one Prometheus per module.

Prometheus scrapes every second and evaluates the chart's rule files every second, so a
test sees its traffic in recording rules within a few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.monitoring.prometheus import LocalPrometheus, PrometheusAPI, prometheus_config
from tests.support import (
    free_port,
    free_port_block,
    free_ports,
    stop_process,
    wait_for_grpc_health,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parents[2]
MODEL = "flight-delay"


@pytest.fixture(scope="session")
def flight_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trainer's flight model on 4000 generated rows, plus a version that cannot load."""
    root = tmp_path_factory.mktemp("obs-models")
    data = root / "flights.csv"
    repo = root / "models"
    py = [sys.executable, "-m"]
    subprocess.run([*py, "trainer", "generate", "--out", str(data), "--rows", "4000"], check=True)
    subprocess.run(
        [*py, "server.cli", "train", "--data", str(data), "--model-repository", str(repo)],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    # a broken model next to it: the load-failure metric then has a real sample
    broken = repo / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    return repo


def manifest(repo: Path) -> dict[str, Any]:
    return dict(json.loads((repo / MODEL / "1" / "model.json").read_text()))


def _wait_scraped(api: PrometheusAPI, metrics: list[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(api.query(m) for m in metrics):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Prometheus has not scraped {metrics} after {timeout}s")
        time.sleep(0.25)


@dataclass
class Stack:
    grpc: str
    envoy_grpc: str
    envoy_http_port: int
    metrics: str
    envoy_stats: str
    prometheus: PrometheusAPI
    repo: Path
    capture: Path | None = None


@pytest.fixture(scope="module")
def stack(flight_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("obs-logs")
    workers = 2
    port, metrics = free_port(), free_port()
    base = free_port_block(workers)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRONTO_")}
    serve = [
        sys.executable, "-m", "server.cli", "serve",
        "--model-repository", str(flight_repo), "--workers", str(workers),
        "--host", "127.0.0.1", "--port", str(port), "--worker-base-port", str(base),
        "--metrics-port", str(metrics), "--metrics-flush-interval", "0.2",
        "--log-level", "WARNING",
        "--capture-dir", str(logs / "capture"), "--capture-sample-rate", "1",
        "--capture-flush-interval", "0.2", "--quality-refresh-seconds", "2",
        "--model-poll-interval", "1",
    ]  # fmt: skip
    listen, admin, stats = free_ports(3)
    gateway = [
        sys.executable, "-m", "server.cli", "gateway",
        "--listen-address", "127.0.0.1", "--listen-port", str(listen),
        "--admin-port", str(admin), "--stats-port", str(stats),
        "--workers", str(workers), "--worker-base-port", str(base),
        "--envoy-concurrency", "1", "--envoy-log-level", "error", "--no-require-auth",
    ]  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    prom = LocalPrometheus(
        prometheus_config(
            [f"127.0.0.1:{metrics}"],
            [f"127.0.0.1:{stats}"],
            scrape_interval="1s",
            evaluation_interval="1s",
        ),
        port=free_port(),
        workdir=logs / "prometheus",
    )
    try:
        with (logs / "serve.log").open("wb") as out:
            procs.append(subprocess.Popen(serve, cwd=ROOT, env=env, stdout=out, stderr=out))
        for i in range(workers):
            wait_for_grpc_health(f"127.0.0.1:{base + i}", timeout=60, proc=procs[0])
        with (logs / "envoy.log").open("wb") as out:
            procs.append(subprocess.Popen(gateway, cwd=ROOT, env=env, stdout=out, stderr=out))
        wait_for_port(listen, timeout=30)
        wait_for_port(stats, timeout=30)
        prom.start()
        # traffic before the first scrape would look like counters that started non-zero
        # (rates of 0): wait until both targets have been scraped
        _wait_scraped(prom.api, ["pronto_workers_ready", "envoy_cluster_membership_total"])
        yield Stack(
            grpc=f"127.0.0.1:{port}",
            envoy_grpc=f"127.0.0.1:{listen}",
            envoy_http_port=listen,
            metrics=f"127.0.0.1:{metrics}",
            envoy_stats=f"127.0.0.1:{stats}",
            prometheus=prom.api,
            repo=flight_repo,
            capture=logs / "capture",
        )
    except Exception:
        for log in sorted(logs.glob("*.log")):
            print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        prom.stop()
        for proc in reversed(procs):
            stop_process(proc)
