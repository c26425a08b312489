"""Port picking for the processes that tests and ``pronto up`` start."""

from __future__ import annotations

import collections
import socket
from collections.abc import Iterator
from types import TracebackType

import pytest

from pronto_cli import procs


class _Offered:
    """Stands for a probing socket that the kernel bound to ``port``."""

    def __init__(self, port: int) -> None:
        self.port = port

    def __enter__(self) -> _Offered:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def _kernel_offers(monkeypatch: pytest.MonkeyPatch, ports: list[int]) -> None:
    offers: Iterator[int] = iter(ports)
    monkeypatch.setattr(procs, "_HANDED", collections.deque(maxlen=512))
    monkeypatch.setattr(procs, "_probe", lambda: _Offered(next(offers)))


def test_a_port_offered_again_is_not_handed_out_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    # the kernel may offer a port again as soon as the probe is closed, before the
    # process it was picked for has bound it
    _kernel_offers(monkeypatch, [40001, 40001, 40002, 40001, 40002, 40003, 40004])
    assert procs.free_port() == 40001
    assert procs.free_port() == 40002
    assert procs.free_ports(2) == [40003, 40004]


def test_a_block_over_a_handed_out_port_is_not_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    _kernel_offers(monkeypatch, [40001, 40001, free])
    assert procs.free_port() == 40001
    assert procs.port_block(1) == free
    assert free in procs._HANDED
