"""TLS between Envoy and the workers, through a TLS-terminating relay (see tls.py)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.launcher import envoy_binary
from tests.gateway.harness import Server, request, run_gateway
from tests.gateway.modelgen import MODEL, instance
from tests.gateway.tls import SERVER_NAME, relay_config, write_certificates
from tests.support import free_port_block, stop_process, wait_for_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_certificates(tmp_path_factory.mktemp("certs"))


@contextlib.contextmanager
def _relay(server: Server, certs: dict[str, Path], folder: Path) -> Iterator[Server]:
    base = free_port_block(server.workers)
    config = folder / "relay.yaml"
    config.write_text(relay_config(server.base_port, base, server.workers, certs, tls=True))
    cmd = [envoy_binary(), "-c", str(config), "--concurrency", "1", "--disable-hot-restart"]
    proc = subprocess.Popen([*cmd, "--log-level", "error"])
    try:
        for i in range(server.workers):
            wait_for_port(base + i)
        yield Server(server.proc, server.port, base, server.workers)
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def tls_workers(
    server: Server, certs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with _relay(server, certs, tmp_path_factory.mktemp("relay")) as relayed:
        yield relayed


def test_tls_to_workers(tls_workers: Server, certs: dict[str, Path]) -> None:
    flags = ["--upstream-tls", "--upstream-tls-ca-file", str(certs["ca"])]
    flags += ["--upstream-tls-server-name", SERVER_NAME]
    with run_gateway(tls_workers, *flags) as gateway:
        reply = request(gateway, "POST", f"/v1/models/{MODEL}:predict", {"instances": [instance()]})
        assert reply.status == 200, reply.body


def test_tls_to_workers_refuses_an_unexpected_name(
    tls_workers: Server, certs: dict[str, Path]
) -> None:
    flags = ["--upstream-tls", "--upstream-tls-ca-file", str(certs["ca"])]
    flags += ["--upstream-tls-server-name", "someone.else"]
    with run_gateway(tls_workers, *flags, healthy=False) as gateway:
        reply = request(gateway, "GET", "/v1/models")
        assert reply.status == 503, reply.body
