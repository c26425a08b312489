"""Helpers for integration tests that run real processes.

The process, port and health helpers are the ones ``pronto up`` and the load tests use
(:mod:`pronto_cli.procs`); this module only re-exports them under the names the tests use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pronto_cli.procs import (
    PRONTO,
    free_port,
    free_ports,
    running,
    stop_process,
    wait_for_grpc_health,
    wait_for_http,
    wait_for_port,
)
from pronto_cli.procs import port_block as free_port_block
from pronto_contract import VersionPolicy, select_versions

if TYPE_CHECKING:
    from server.model import ModelHandle

__all__ = [
    "PRONTO",
    "eventually",
    "free_port",
    "free_port_block",
    "free_ports",
    "load_models",
    "running",
    "stop_process",
    "wait_for_grpc_health",
    "wait_for_http",
    "wait_for_port",
]


def load_models(root: Path, latest: int = 1) -> list[ModelHandle]:
    """Load the ``latest`` newest versions of every model under ``root`` in this process
    (the way a worker does, for in-process tests of the core)."""
    from server.model import load_model

    selected = select_versions(root, policy=VersionPolicy(latest=latest))
    return [
        load_model(name, version, path)
        for name, versions in selected.items()
        for version, path in versions.items()
    ]


T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.5) -> T:
    """``check()``'s result once it stops raising AssertionError; its last error after
    ``timeout`` seconds. For state published asynchronously (timers, scrapes, rules)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)
