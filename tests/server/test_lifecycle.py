"""Process lifecycle: a killed worker is replaced; SIGTERM drains in-flight requests."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.generated.inference import grpc_service_pb2 as pb
from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.template import worker_processes
from tests.server.conftest import ROOT, Server, start_server
from tests.server.modelgen import SLOW_WIDTH, build_slow_model
from tests.server.oip_requests import infer_request
from tests.support import free_port, stop_process, wait_for_grpc_health

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LAYERS = 800


@pytest.fixture(scope="module")
def slow_repo(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slow-repo")
    shutil.copytree(model_repo / "flights", root / "flights")
    build_slow_model(root / "slow" / "1", layers=LAYERS)
    return root


@pytest.fixture
def fresh_server(slow_repo: Path, tmp_path: Path) -> Iterator[Server]:
    srv = start_server(slow_repo, tmp_path / "serve.log", 2, "--grace-period", "100")
    yield srv
    stop_process(srv.proc)


def _workers(server: Server) -> list[int]:
    return sorted(p.pid for p in worker_processes(psutil.Process(server.proc.pid)))


def test_killed_worker_is_replaced(fresh_server: Server) -> None:
    server = fresh_server
    victim, survivor = _workers(server)
    # which private port belongs to the victim: ask each port for its connections' owner
    victim_index = next(
        i
        for i in range(server.workers)
        if any(
            c.laddr.port == server.base_port + i
            for c in psutil.Process(victim).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        )
    )
    survivor_address = server.worker_address(1 - victim_index)
    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    def hammer() -> None:
        nonlocal answered
        with grpc.insecure_channel(survivor_address) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            while not stop.is_set():
                try:
                    stub.ModelInfer(infer_request(), timeout=5)
                    answered += 1
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code()}: {exc.details()}")

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        time.sleep(0.3)
        killed_at = time.monotonic()
        psutil.Process(victim).send_signal(signal.SIGKILL)
        while True:
            pids = _workers(server)
            if len(pids) == server.workers and victim not in pids:
                break
            # generous: this machine may be shared; `make chaos` measures restart times
            assert time.monotonic() - killed_at < 30.0, "worker not restarted"
            time.sleep(0.02)
        wait_for_grpc_health(server.worker_address(victim_index), timeout=30)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:3]
    assert answered > 0
    with grpc.insecure_channel(server.worker_address(victim_index)) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
        assert stub.ModelInfer(infer_request(), timeout=5).model_name == "flights"
    assert survivor in _workers(server)
    assert server.proc.poll() is None
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert "pronto_worker_restarts_total 1.0" in resp.read().decode()


def test_drain_reports_not_serving_then_exits(slow_repo: Path, tmp_path: Path) -> None:
    server = start_server(slow_repo, tmp_path / "serve.log", 2, "--drain-delay", "2")
    try:
        with grpc.insecure_channel(server.worker_address(0)) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            health = health_pb2_grpc.HealthStub(ch)
            stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
            server.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            for service in ("", "flights"):
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            # still answering during the drain delay, so late requests are not lost
            assert stub.ModelInfer(infer_request(), timeout=5).model_name == "flights"
        assert server.proc.wait(timeout=30) == 0
    finally:
        stop_process(server.proc)


ROWS = 1024  # with LAYERS layers: about 0.5 s of work per request on one core


def _in_flight(server: Server) -> float:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("pronto_requests_in_flight "):
                return float(line.split()[1])
    return 0.0


def _slow_request() -> pb.ModelInferRequest:
    x = np.random.default_rng(1).random((ROWS, SLOW_WIDTH), dtype=np.float32)
    req = pb.ModelInferRequest(model_name="slow")
    req.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return req


def _handled(metrics_dir: Path, method: str) -> dict[str, float]:
    """Requests the workers handled, by status code, read from the metrics files."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    codes: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "pronto_requests_total" and sample.labels["method"] == method:
                code = sample.labels["code"]
                codes[code] = codes.get(code, 0.0) + sample.value
    return codes


def test_sigterm_drains_in_flight_requests(fresh_server: Server) -> None:
    server = fresh_server
    request = _slow_request()
    channels = [grpc.insecure_channel(server.worker_address(i % 2)) for i in range(4)]
    try:
        stubs = [pb_grpc.GRPCInferenceServiceStub(ch) for ch in channels]
        for stub in stubs:  # connect first, so the requests below start right away
            stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
        with ThreadPoolExecutor(12) as pool:
            futures = [
                pool.submit(stubs[i % len(stubs)].ModelInfer, request, timeout=120)
                for i in range(12)
            ]
            # Signal while the workers hold several requests. Each worker runs its six one
            # after another (seconds of work), so the pile-up shows in the gauge long before
            # they can finish; stop waiting only if they did finish, which fails the test.
            while _in_flight(server) < 6:
                assert not all(f.done() for f in futures), "requests never piled up"
                time.sleep(0.02)
            server.proc.send_signal(signal.SIGTERM)
            ok, refused = [], []
            for f in futures:
                try:
                    ok.append(f.result())
                except grpc.RpcError as exc:
                    refused.append(exc.code())
        assert server.proc.wait(timeout=120) == 0
    finally:
        for ch in channels:
            ch.close()
    assert all(r.outputs[0].shape == [ROWS, SLOW_WIDTH] for r in ok)
    # Every request a worker's servicer had started finished successfully (the workers'
    # own counts hold nothing but OK); the others were refused without being run: with
    # UNAVAILABLE once the worker stopped listening, or with CANCELLED when gRPC's core had
    # taken the stream but not yet handed it to the servicer as the server stopped.
    assert _handled(server.metrics_dir, "ModelInfer") == {"OK": float(len(ok))}
    assert len(ok) >= 6 and len(ok) + len(refused) == len(futures)
    assert set(refused) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}


def test_broken_model_is_skipped(model_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "flights", repo / "flights")
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    server = start_server(repo, tmp_path / "serve.log")
    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            assert stub.ModelReady(pb.ModelReadyRequest(name="flights"), timeout=5).ready
            assert not stub.ModelReady(pb.ModelReadyRequest(name="broken"), timeout=5).ready
        assert "failed to load broken version 1" in (tmp_path / "serve.log").read_text()
    finally:
        assert stop_process(server.proc) == 0


def test_unusable_setup_stops_the_server(model_repo: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cmd = [sys.executable, "-m", "pronto_cli", "serve", "--model-repository", str(empty),
           "--metrics-port", "0", "--worker-base-port", "0",
           "--port", str(free_port())]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no models found" in done.stderr
    broken = tmp_path / "broken"
    (broken / "m" / "1").mkdir(parents=True)
    (broken / "m" / "1" / "model.onnx").write_bytes(b"junk")
    cmd[cmd.index(str(empty))] = str(broken)
    done = subprocess.run(
        [*cmd, "--workers", "1"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "no model could be loaded" in done.stderr
    with socket.socket() as taken:  # a port someone else holds without SO_REUSEPORT
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cmd[cmd.index(str(broken))] = str(model_repo)
        cmd[-1] = port
        done = subprocess.run(
            [*cmd, "--workers", "1", "--host", "127.0.0.1"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in done.stderr
