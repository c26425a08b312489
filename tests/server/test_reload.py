"""Hot reload with real server processes: publish, break, remove and SIGHUP under traffic."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from server.core import InferenceCore
from server.generated.inference import grpc_service_pb2 as pb
from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.model import ModelHandle, load_model
from server.oip_codec import decode_infer_request
from server.reload import Reloader
from server.repository import Registry
from tests.server.conftest import Server, start_server
from tests.server.oip_requests import infer_request
from tests.support import stop_process

POLL = "0.2"


def publish(repo: Path, version: int, source: int = 1, broken: bool = False) -> None:
    """Publish like the trainer: write a hidden folder, then rename it into place."""
    tmp = repo / "flights" / f".tmp-{uuid.uuid4().hex}"
    shutil.copytree(repo / "flights" / str(source), tmp)
    if broken:
        (tmp / "model.onnx").write_bytes(b"not an onnx model")
    os.rename(tmp, repo / "flights" / str(version))


def unpublish(repo: Path, version: int) -> None:
    trash = repo / "flights" / f".trash-{uuid.uuid4().hex}"
    os.rename(repo / "flights" / str(version), trash)
    shutil.rmtree(trash)


def served_version(address: str, version: str = "") -> str:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        return str(stub.ModelInfer(infer_request(version=version), timeout=5).model_version)


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met in time")


def all_workers_serve(server: Server, version: str) -> bool:
    return all(served_version(server.worker_address(i)) == version for i in range(server.workers))


def metric(server: Server, prefix: str) -> float:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


class Traffic:
    """Steady unary traffic from a few threads to every worker; records every outcome."""

    def __init__(self, server: Server, threads: int = 3) -> None:
        self.addresses = [server.address] + [
            server.worker_address(i) for i in range(server.workers)
        ]
        self.threads = threads
        self.ok = 0
        self.errors: list[str] = []
        self.versions: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def _loop(self, address: str) -> None:
        request = infer_request()
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not self._stop.is_set():
                try:
                    reply = stub.ModelInfer(request, timeout=10)
                except grpc.RpcError as exc:
                    with self._lock:
                        self.errors.append(f"{exc.code()}: {exc.details()}")
                    continue
                with self._lock:
                    self.ok += 1
                    self.versions.add(reply.model_version)

    def __enter__(self) -> Traffic:
        for i in range(self.threads):
            t = threading.Thread(target=self._loop, args=(self.addresses[i % len(self.addresses)],))
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join()


@pytest.fixture
def repo(model_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the flights model (versions 1 and 2): tests publish and remove."""
    root = tmp_path / "models"
    shutil.copytree(model_repo / "flights", root / "flights")
    return root


@pytest.fixture
def polling(repo: Path, tmp_path: Path) -> Iterator[Server]:
    srv = start_server(repo, tmp_path / "serve.log", 2, "--model-poll-interval", POLL)
    yield srv
    stop_process(srv.proc)


@pytest.mark.integration
def test_publish_under_traffic_then_broken_then_removed(polling: Server, repo: Path) -> None:
    assert all_workers_serve(polling, "2")
    with Traffic(polling, threads=4) as traffic:
        time.sleep(0.5)
        publish(repo, 3)
        wait_until(lambda: all_workers_serve(polling, "3"))
        time.sleep(0.5)
        # a broken version: logged, counted, and the previous one keeps serving
        publish(repo, 4, broken=True)
        wait_until(lambda: metric(polling, "pronto_model_load_failures_total") >= 2)
        assert all_workers_serve(polling, "3")
        # removing the served version: the next newest takes over
        unpublish(repo, 4)
        unpublish(repo, 3)
        wait_until(lambda: all_workers_serve(polling, "2"))
        time.sleep(0.5)
    assert traffic.errors == []
    assert traffic.ok > 50
    assert {"2", "3"} <= traffic.versions and "4" not in traffic.versions
    # counted once per worker, not once per poll
    time.sleep(1.0)
    assert metric(polling, 'pronto_model_load_failures_total{model="flights",version="4"}') == 2


def metadata_versions(address: str, version: str = "", name: str = "flights") -> list[str]:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=name, version=version))
        return list(meta.versions)


@pytest.mark.integration
def test_version_removed_is_not_found(polling: Server, repo: Path) -> None:
    assert served_version(polling.address, "1") == "1"
    for i in range(polling.workers):
        assert metadata_versions(polling.worker_address(i), "2") == ["2", "1"]
    unpublish(repo, 1)

    def gone() -> bool:
        for i in range(polling.workers):
            try:
                served_version(polling.worker_address(i), "1")
                return False
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
        return True

    wait_until(gone)
    assert all_workers_serve(polling, "2")
    for i in range(polling.workers):  # metadata lists what is served now
        assert metadata_versions(polling.worker_address(i), "2") == ["2"]


@pytest.mark.integration
def test_sighup_reload(repo: Path, tmp_path: Path) -> None:
    srv = start_server(repo, tmp_path / "serve.log", 2, "--model-poll-interval", "0")
    try:
        publish(repo, 3)
        time.sleep(0.6)
        assert all_workers_serve(srv, "2")  # no polling: nothing changes by itself
        srv.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: all_workers_serve(srv, "3"))
        assert srv.proc.poll() is None
    finally:
        stop_process(srv.proc)


class _Gate:
    """An ONNX Runtime session whose runs wait until the test opens the gate."""

    def __init__(self, session: Any, gate: threading.Event, entered: threading.Semaphore) -> None:
        self.session, self.gate, self.entered = session, gate, entered

    def run(self, outputs: Any, feeds: Any) -> Any:
        self.entered.release()
        if not self.gate.wait(60):
            raise TimeoutError("the test never opened the gate")
        return self.session.run(outputs, feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def test_in_flight_requests_finish_on_the_old_version(repo: Path) -> None:
    """Requests running on version 2 when version 3 replaces it (and 2 leaves the disk)
    finish on version 2. Explicit synchronization, no timing: the model's runs block until
    the test has seen the reload through."""
    gate, entered = threading.Event(), threading.Semaphore(0)

    def load(name: str, version: int, path: Path) -> ModelHandle:
        handle = load_model(name, version, path)  # warmed up before the gate is fitted
        handle.inline_rows = 0  # past offload_rows, every run goes to the helper thread
        handle.session = _Gate(handle.session, gate, entered)  # type: ignore[assignment]
        return handle

    async def scenario() -> tuple[int, list[str], list[str], str]:
        registry = Registry()
        reloader = Reloader(registry, repo, load=load)
        core = InferenceCore(registry, offload_rows=1)  # runs on the helper thread
        core.ready = True
        request = decode_infer_request(infer_request(), 1 << 22, 1 << 22)
        try:
            reloader.load_initial()
            assert registry.versions("flights") == ["2"]
            in_flight = [asyncio.create_task(core.infer(request)) for _ in range(3)]
            # the first request is inside the model (the others queue behind it)
            assert await asyncio.to_thread(entered.acquire, True, 30)
            publish(repo, 3, source=2)
            unpublish(repo, 2)
            assert await reloader.reload()
            served_now = registry.versions("flights")
            pending = [t for t in in_flight if not t.done()]
            gate.set()
            replies = await asyncio.gather(*in_flight)
            after = await core.infer(request)
            return len(pending), served_now, [r.model_version for r in replies], after.model_version
        finally:
            gate.set()
            reloader.close()
            core.close()

    held, served_now, versions, after = asyncio.run(scenario())
    assert held == 3  # all three were still in flight when version 3 took over
    assert served_now == ["3"]
    assert versions == ["2", "2", "2"]
    assert after == "3"
