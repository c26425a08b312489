"""One trained model repository per session; one authenticated stack for the corpus tests.

The stack is a real ``pronto serve`` (two workers, DEBUG logs) behind a real Envoy that
demands an API key or a JWT, with access logging on: the same processes serve the corpus,
the interleaved good requests and the secret-logging check.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadtest.chaos.stack import Gateway, Instance, port_block, prepare_repository
from loadtest.tokens import Signer

API_KEY = "k-reliability-5e1f0c2d9a"
ISSUER = "https://issuer.test"
AUDIENCE = "pronto"


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_repository(tmp_path_factory.mktemp("reliability-repo"))


@dataclass
class SecuredStack:
    server: Instance
    gateway: Gateway
    signer: Signer
    logs: list[Path]

    @property
    def address(self) -> str:
        return self.gateway.address

    @property
    def port(self) -> int:
        return self.gateway.listen

    def token(self) -> str:
        return self.signer.token(ISSUER, AUDIENCE)


@pytest.fixture(scope="session")
def secured(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredStack]:
    folder = tmp_path_factory.mktemp("secured")
    signer = Signer()
    jwks = signer.write_jwks(folder / "jwks.json")
    keys = folder / "api-keys"
    keys.write_text(f"tester:{API_KEY}\n")
    base = port_block(2)
    server = Instance(repository, 2, base, folder / "server.log", extra={"log_level": "DEBUG"})
    flags = ["--api-keys-file", str(keys), "--jwt-jwks-file", str(jwks), "--jwt-issuer", ISSUER]
    flags += ["--jwt-audiences", AUDIENCE, "--require-auth", "--access-log"]
    gateway = Gateway(base, 2, folder / "envoy.log", flags=flags)
    try:
        server.start()
        gateway.start()
        yield SecuredStack(server, gateway, signer, [server.log, gateway.log])
    finally:
        gateway.stop()
        server.stop()
