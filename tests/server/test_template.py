"""The warm template: replacement workers fork from a process with the models loaded."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import psutil
import pytest

from pronto_cli.predict import CHANNEL_OPTIONS
from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
from server.template import TEMPLATE_NAME, worker_processes
from tests.server.conftest import ROOT, Server, start_server
from tests.server.oip_requests import infer_request
from tests.support import stop_process, wait_for_grpc_health


def test_supervisor_imports_neither_numpy_nor_onnxruntime() -> None:
    """Protects the fork rule: the supervisor forks the template and, when it has to, cold
    workers; numpy (OpenBLAS) and onnxruntime start native threads on import, which a fork
    must not copy. Nor may it import them by way of the metrics or reload modules."""
    code = (
        "import sys, server.supervisor, server.metrics, server.template\n"
        "print(sorted(m for m in ('numpy', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.fixture
def fresh(model_repo: Path, tmp_path: Path) -> Iterator[Server]:
    srv = start_server(model_repo, tmp_path / "serve.log")
    yield srv
    stop_process(srv.proc)


def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise TimeoutError("condition not met")


@pytest.mark.integration
def test_replacement_forks_from_the_template_without_loading(fresh: Server) -> None:
    supervisor = psutil.Process(fresh.proc.pid)
    names = sorted(p.name() for p in supervisor.children())
    assert names.count(TEMPLATE_NAME) == 1 and len(names) == fresh.workers + 1, names
    before = {p.pid for p in worker_processes(supervisor)}
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        pids = {p.pid for p in worker_processes(supervisor)}
        return victim not in pids and len(pids) == fresh.workers

    _wait(replaced)
    (new,) = {p.pid for p in worker_processes(supervisor)} - before
    for i in range(fresh.workers):
        wait_for_grpc_health(fresh.worker_address(i), timeout=30, proc=fresh.proc)
    for i in range(fresh.workers):
        with grpc.insecure_channel(fresh.worker_address(i)) as ch:
            reply = pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(infer_request(), timeout=10)
            assert len(reply.outputs) == 2
    log = fresh.log.read_text()
    assert f"(pid {victim}) exited with -9" in log
    assert re.search(rf"started worker \d \(pid {new}\) from the template", log), log
    # the replacement reused the template's sessions: it loaded no model itself
    assert not re.search(rf" {new} INFO server\.model: loaded ", log), log
    assert fresh.proc.poll() is None


@pytest.mark.integration
def test_direct_client_with_the_published_retry_policy_sees_no_crash(fresh: Server) -> None:
    """Every worker killed once while a client calls the shared port over one channel
    configured like ``pronto predict``: UNAVAILABLE is retried, nothing reaches the caller."""
    supervisor = psutil.Process(fresh.proc.pid)
    errors: list[str] = []
    answered = 0
    stop = threading.Event()

    def client() -> None:
        nonlocal answered
        with grpc.insecure_channel(fresh.address, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                try:
                    stub.ModelInfer(infer_request(), timeout=10)
                    answered += 1
                except grpc.RpcError as exc:
                    errors.append(f"{exc.code()}: {exc.details()}")

    thread = threading.Thread(target=client)
    thread.start()
    try:
        _wait(lambda: answered >= 20)
        for _ in range(2 * fresh.workers):
            before = {p.pid for p in worker_processes(supervisor)}
            victim = min(before)
            os.kill(victim, signal.SIGKILL)

            def replaced(v: int = victim) -> bool:
                pids = {p.pid for p in worker_processes(supervisor)}
                return v not in pids and len(pids) == fresh.workers

            _wait(replaced)
            mark = answered
            _wait(lambda m=mark: answered >= m + 20)  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=30)
    assert errors == [], errors[:5]
    assert answered >= 20 * (2 * fresh.workers + 1)


def test_only_workers_that_die_young_back_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed after it served (an OOM kill, a node's chaos) is replaced at once,
    however often that happens; one that dies right after starting, again and again, is
    restarted later and later."""
    from server import supervisor as module
    from server.settings import ServeSettings
    from server.supervisor import MAX_BACKOFF_SECONDS, QUICK_DEATH_SECONDS, Supervisor

    clock = [1000.0]  # the supervisor's monotonic clock, moved by the test alone
    monkeypatch.setattr(module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    supervisor = Supervisor(ServeSettings(model_repository=tmp_path, workers=1))
    (slot,) = supervisor.slots
    killed = signal.SIGKILL.value  # the wait status of a process killed by SIGKILL

    def dies_after(lived: float) -> float:
        slot.pid, slot.started = 1 << 22, clock[0]
        clock[0] += lived
        assert supervisor._on_exit(slot, killed)
        return slot.restart_at - clock[0]

    for _ in range(5):  # killed 1.5 s after each start (it had served for all but 50 ms)
        assert dies_after(1.5) == 0
    delays = [dies_after(QUICK_DEATH_SECONDS / 10) for _ in range(6)]
    assert delays == [0, 1.0, 2.0, 4.0, MAX_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS]
    assert dies_after(1.5) == 0  # served again: the count starts over


def test_objects_are_frozen_before_a_fork_and_dropped_versions_collected() -> None:
    """Workers inherit a frozen heap (their collector leaves the shared pages alone); a
    refresh that dropped models unfreezes first, so garbage in cycles is still freed."""
    import gc
    import weakref

    from server.template import freeze_for_fork

    class Node:
        def __init__(self) -> None:
            self.me = self  # a reference cycle: only the collector frees it

    try:
        node = Node()
        alive = weakref.ref(node)
        freeze_for_fork(changed=False)
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert alive() is not None  # frozen: no collection looks at it
        freeze_for_fork(changed=False)  # nothing loaded or dropped: stays frozen
        assert alive() is not None
        freeze_for_fork(changed=True)
        assert alive() is None and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
