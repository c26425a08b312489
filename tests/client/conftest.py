"""Real processes for the client tests: one server, an open and an authenticated Envoy,
and a TLS-terminating Envoy in front of the open one."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.launcher import envoy_binary
from loadtest.tokens import Signer
from tests.gateway.harness import Gateway, Server, run_gateway, run_server
from tests.gateway.modelgen import build_repository
from tests.gateway.tls import relay_config, write_certificates
from tests.support import free_port, stop_process, wait_for_port

ISSUER = "https://issuer.pronto.test"
AUDIENCE = "pronto"
API_KEY = "k-3f9a1c"


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def server(repository: Path) -> Iterator[Server]:
    with run_server(repository, workers=2) as running:
        yield running


@pytest.fixture(scope="session")
def gateway(server: Server) -> Iterator[Gateway]:
    with run_gateway(server) as running:
        yield running


@pytest.fixture(scope="session")
def signer() -> Signer:
    return Signer()


@pytest.fixture(scope="session")
def secured(
    server: Server, signer: Signer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("auth")
    keys = folder / "api-keys.txt"
    keys.write_text(f"batch-scorer:{API_KEY}\n")
    jwks = signer.write_jwks(folder / "jwks.json")
    flags = [
        "--jwt-jwks-file", str(jwks), "--jwt-issuer", ISSUER, "--jwt-audiences", AUDIENCE,
        "--api-keys-file", str(keys), "--require-auth",
    ]  # fmt: skip
    with run_gateway(server, *flags) as running:
        yield running


@dataclass(frozen=True)
class TlsFront:
    port: int
    ca: Path

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"


@pytest.fixture(scope="session")
def tls_front(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsFront]:
    """TLS on a port of its own, relayed to the open gateway (gRPC and REST alike)."""
    folder = tmp_path_factory.mktemp("tls")
    certs = write_certificates(folder, names=("localhost",), addresses=("127.0.0.1",))
    port = free_port()
    config = folder / "relay.yaml"
    config.write_text(relay_config(gateway.port, port, 1, certs, tls=True))
    cmd = [envoy_binary(), "-c", str(config), "--concurrency", "1", "--disable-hot-restart"]
    proc = subprocess.Popen([*cmd, "--log-level", "error"])
    try:
        wait_for_port(port)
        yield TlsFront(port, certs["ca"])
    finally:
        stop_process(proc)


@contextlib.contextmanager
def gateway_with(server: Server, *flags: str) -> Iterator[Gateway]:
    with run_gateway(server, *flags) as running:
        yield running
