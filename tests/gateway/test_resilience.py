"""A worker killed under load is hidden from REST clients by retries and health checks."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

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


def test_killed_worker_causes_no_client_errors(own_server: Server, own_gateway: Gateway) -> None:
    victim = _worker_on(own_server, own_server.base_port)
    stop = threading.Event()
    outcomes: list[list[object]] = [[], []]
    clients = [
        threading.Thread(target=_client, args=(own_gateway, stop, outcome)) for outcome in outcomes
    ]
    for client in clients:
        client.start()
    time.sleep(1.0)
    before_kill = sum(len(o) for o in outcomes)
    os.kill(victim.pid, signal.SIGKILL)
    time.sleep(2.0)
    stop.set()
    for client in clients:
        client.join(timeout=15)
    results = [r for outcome in outcomes for r in outcome]
    errors = [r for r in results if r != 200]
    assert before_kill > 10 and len(results) > before_kill + 10, len(results)
    assert errors == [], f"{len(errors)} of {len(results)} requests failed: {errors[:5]}"
    assert not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE
