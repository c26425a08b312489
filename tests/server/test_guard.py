"""The per-worker admission guard: row budget and memory guard, without a server."""

from __future__ import annotations

import asyncio
import os

import pytest

from server import guard as guard_module
from server.errors import ResourceExhausted
from server.guard import AdmissionGuard, resident_bytes


def test_rows_beyond_the_budget_are_refused_and_released() -> None:
    async def run() -> None:
        guard = AdmissionGuard(max_rows=100, memory_limit_bytes=0, large_rows=50)
        with guard.admit(60):
            assert guard.rows_in_flight == 60
            with pytest.raises(ResourceExhausted, match="rows in flight"), guard.admit(50):
                pass
            with guard.admit(40):
                assert guard.rows_in_flight == 100
        assert guard.rows_in_flight == 0
        with pytest.raises(ResourceExhausted, match="split the batch"):
            guard.check(101)

    asyncio.run(run())


def test_memory_guard_refuses_large_requests_only() -> None:
    async def run() -> None:
        assert resident_bytes() > 2**20
        guard = AdmissionGuard(max_rows=10_000, memory_limit_bytes=2**20, large_rows=256)
        with guard.admit(10):  # small requests always pass: health of the service
            pass
        with pytest.raises(ResourceExhausted, match="short of memory") as caught, guard.admit(256):
            pass
        assert caught.value.reason == "memory"
        assert guard.rows_in_flight == 0

    asyncio.run(run())


def test_resident_bytes_reads_its_own_process_after_a_fork() -> None:
    """Workers are forked from a template that has read its own figure already: a child
    must measure itself, not the process it was forked from."""
    parent = resident_bytes()
    grow = 64 * 2**20
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: grow by ``grow`` resident bytes, then report both readings
        code = 1
        try:
            os.close(read_end)
            before = resident_bytes()
            ballast = b"\x01" * grow  # written, so resident
            after = resident_bytes()
            os.write(write_end, f"{before} {after} {len(ballast)}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        before, after, size = map(int, reader.read().split())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert size == grow
    assert after - before >= grow - 2**20
    assert resident_bytes() < parent + grow // 2  # the parent did not grow with it


def test_trims_after_large_requests_are_coalesced(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of large requests costs two heap trims, not one each; the last comes at
    least TRIM_DELAY after the last large request, when its messages are freed."""
    trims: list[float] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(guard_module, "return_free_memory", lambda: trims.append(loop.time()))
        guard = AdmissionGuard(max_rows=10_000, memory_limit_bytes=0, large_rows=256)

        async def settled() -> None:
            while guard._trim is not None:  # the trims still due
                await asyncio.sleep(guard_module.TRIM_DELAY / 4)

        for _ in range(50):
            with guard.admit(256):
                pass
            with guard.admit(10):  # small requests schedule nothing
                pass
        last = loop.time()
        await settled()
        assert len(trims) == 2
        assert trims[-1] - last >= guard_module.TRIM_DELAY * 0.9
        with guard.admit(300):
            pass
        await settled()
        assert len(trims) == 3  # one request after a quiet spell: one trim

    asyncio.run(run())
