"""Workers killed under load are hidden from REST and gRPC clients by Envoy's retries."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psutil
import pytest

from server.generated.pronto.v1 import prediction_pb2 as ppb
from server.generated.pronto.v1 import prediction_pb2_grpc as ppb_grpc
from server.template import worker_processes
from tests.gateway.harness import Gateway, Server, request, run_gateway, run_server
from tests.gateway.modelgen import MODEL, instance

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def own_server(repository: Path) -> Iterator[Server]:
    # Not the shared server: this test kills one of its workers.
    with run_server(repository, workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def own_gateway(own_server: Server) -> Iterator[Gateway]:
    with run_gateway(own_server) as running:
        yield running


def _worker_on(server: Server, port: int) -> psutil.Process:
    for child in worker_processes(psutil.Process(server.proc.pid)):
        try:
            connections = child.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections):
            return child
    raise LookupError(f"no worker listens on {port}")


def _client(gateway: Gateway, stop: threading.Event, outcomes: list[object]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    i = 0
    try:
        while not stop.is_set():
            i += 1
            try:
                reply = request(
                    conn, "POST", f"/v1/models/{MODEL}:predict", {"instances": [instance(i)]}
                )
                outcomes.append(reply.status if reply.status != 200 else 200)
            except (OSError, http.client.HTTPException) as exc:  # a client-visible failure
                outcomes.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    finally:
        conn.close()


def _grpc_client(gateway: Gateway, stop: threading.Event, outcomes: list[object]) -> None:
    with grpc.insecure_channel(gateway.address) as channel:
        stub = ppb_grpc.PredictionServiceStub(channel)
        i = 0
        while not stop.is_set():
            i += 1
            request = ppb.PredictRequest(name=MODEL)
            request.instances.add().update(instance(i))
            try:
                stub.Predict(request, timeout=10)
                outcomes.append(200)
            except grpc.RpcError as exc:
                outcomes.append(f"{exc.code()}: {exc.details()}")


def _wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.005)


def test_killed_workers_cause_no_client_errors(own_server: Server, own_gateway: Gateway) -> None:
    """Three kill -9 in a row, each as soon as the previous victim's replacement serves,
    under REST and native gRPC load through Envoy: no caller sees an error."""
    stop = threading.Event()
    outcomes: list[list[object]] = [[], [], []]
    targets = (_client, _client, _grpc_client)
    clients = [
        threading.Thread(target=t, args=(own_gateway, stop, o))
        for t, o in zip(targets, outcomes, strict=True)
    ]
    for client in clients:
        client.start()

    def answered() -> int:
        return sum(len(o) for o in outcomes)

    try:
        _wait_for(lambda: all(len(o) >= 10 for o in outcomes))
        victims = []
        for kill in range(3):
            victim = _worker_on(own_server, own_server.base_port + kill % own_server.workers)
            os.kill(victim.pid, signal.SIGKILL)
            victims.append(victim)
            # the replacement listens, and clients kept getting answers meanwhile
            _wait_for(lambda v=victim: _replaced(own_server, v))  # type: ignore[misc]
            mark = answered()
            _wait_for(lambda m=mark: answered() >= m + 20)  # type: ignore[misc]
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=15)
    results = [r for outcome in outcomes for r in outcome]
    errors = [r for r in results if r != 200]
    assert errors == [], f"{len(errors)} of {len(results)} requests failed: {errors[:5]}"
    assert all(len(o) >= 30 for o in outcomes), [len(o) for o in outcomes]
    for victim in victims:
        assert not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE


def _replaced(server: Server, victim: psutil.Process) -> bool:
    pids = {p.pid for p in worker_processes(psutil.Process(server.proc.pid))}
    if victim.pid in pids or len(pids) != server.workers:
        return False
    try:
        for i in range(server.workers):
            _worker_on(server, server.base_port + i)
    except LookupError:
        return False
    return True
