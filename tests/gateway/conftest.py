"""Shared processes: one model repository, one server and one open gateway per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.harness import Gateway, Server, run_gateway, run_server
from tests.gateway.modelgen import build_repository


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # every prediction captured, so the feedback route has predictions to label
    capture = tmp_path_factory.mktemp("capture")
    with run_server(
        repository, 2, "--capture-dir", str(capture), "--capture-sample-rate", "1"
    ) as running:
        yield running


@pytest.fixture(scope="session")
def gateway(server: Server) -> Iterator[Gateway]:
    with run_gateway(server) as running:
        yield running
