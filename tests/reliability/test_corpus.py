"""The bad-input corpus through Envoy, both protocols: each case gets its status, a good
request after each one still succeeds, no worker dies, and worker memory stays flat."""

from __future__ import annotations

import psutil
import pytest

from tests.reliability.client import good_requests_succeed, send
from tests.reliability.conftest import SecuredStack
from tests.reliability.corpus import CASES, Case

pytestmark = pytest.mark.integration


def _expected(case: Case) -> str | int:
    return case.expect if isinstance(case.expect, int) else case.expect.name


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
    return pytest.param(case, id=case.id, marks=marks)


def test_corpus_is_broad() -> None:
    assert len(CASES) >= 50
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.protocol for c in CASES} == {"grpc", "rest"}


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_request_gets_its_status(secured: SecuredStack, case: Case) -> None:
    try:
        assert send(secured, case) == _expected(case)
    finally:
        # interleaved: whatever the bad request did, the next good ones must succeed
        good_requests_succeed(secured)


def _worker_rss(stack: SecuredStack) -> int:
    return sum(psutil.Process(pid).memory_info().rss for pid in stack.server.worker_pids())


def test_workers_survive_the_corpus_with_flat_memory(secured: SecuredStack) -> None:
    pids = secured.server.worker_pids()
    for case in CASES:  # warm-up: caches, arenas and lazily built tables settle
        send(secured, case)
    before = _worker_rss(secured)
    for _ in range(2):
        for case in CASES:
            send(secured, case)
            good_requests_succeed(secured)
    after = _worker_rss(secured)
    assert secured.server.worker_pids() == pids, "a worker died and was replaced"
    assert "exited with" not in secured.server.log.read_text()
    growth = (after - before) / before
    assert growth < 0.05, f"worker RSS grew {growth:.1%}: {before >> 20} -> {after >> 20} MiB"
