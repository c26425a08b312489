"""Short forms of the ``make chaos`` faults (ghz through Envoy, real processes).

The full runs (20 s of load, a kill every 2 s, 512 callers) live in
``python -m loadtest.chaos``; here each fault runs for a few seconds so the suite stays
fast, with the same pass rules.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from gateway.settings import GatewaySettings
from loadtest.chaos import FAULTS, ChaosConfig, FaultResult
from loadtest.chaos.__main__ import main
from loadtest.chaos.crash_overload import kill_grpc, kill_rest, overload_grpc, overload_rest
from loadtest.chaos.faults import hot_reload, rolling_restart, slow

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cfg(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> ChaosConfig:
    out = tmp_path_factory.mktemp("chaos")
    # the time-to-SERVING target (300 ms) is judged by `make chaos`; on a loaded test machine
    # only a replacement that never comes is a failure here
    return ChaosConfig(
        repository=repository, out=out, rps=100, concurrency=4, serving_target_s=10.0
    )


def _check(result: FaultResult) -> None:
    assert result.sent > 0, result.detail
    assert result.verdict == "pass", result.detail
    assert result.failed == 0, (result.errors, result.detail)


def _short_overload(cfg: ChaosConfig) -> ChaosConfig:
    """3 s phases, 128 callers; the pass rules of the full run (p99, goodput) belong to an
    idle machine: here only that the surplus is refused and nothing else fails."""
    return dataclasses.replace(
        cfg, overload_duration_s=3.0, overload_connections=128, overload_p99_ms=1e9,
        goodput_ratio=0.0,
    )  # fmt: skip


def test_kill_9_under_rest_and_grpc_loses_no_request(cfg: ChaosConfig) -> None:
    short = dataclasses.replace(cfg, duration_s=5.0, kill_interval_s=2.0)
    for result in (kill_rest(short), kill_grpc(short)):
        _check(result)
        assert result.detail.startswith("2 kills; back to SERVING after median"), result.detail


def test_overload_is_refused_not_queued(cfg: ChaosConfig) -> None:
    short = _short_overload(cfg)
    result = overload_rest(short)
    assert result.verdict == "pass", result.detail
    assert result.sent > result.succeeded > 0, result
    assert " 0 refused" not in result.detail, result.detail
    # where the CPU went in each phase: every party of the running stack used some
    assert list(result.cores) == ["16", "128"], result.cores
    for phase in result.cores.values():
        assert list(phase) == ["Envoy", "server", "wrk"], phase
        assert all(0 < cores <= 2 * (os.cpu_count() or 1) for cores in phase.values()), phase
    assert "cores at 16 -> 128 callers: Envoy " in result.detail, result.detail


def test_grpc_overload_counts_the_refusals_in_its_latency(cfg: ChaosConfig) -> None:
    """The p99 judged is of every answer: Envoy holds each refusal for the shed hold before
    it answers RESOURCE_EXHAUSTED, so once refusals are more than 1 % of the answers the
    p99 cannot be under the hold (ghz leaves refusals out of its percentiles unless told)."""
    short = _short_overload(cfg)
    result = overload_grpc(short)
    assert result.verdict == "pass", result.detail
    refused = result.errors.get("ResourceExhausted", 0)
    assert refused == result.failed > 0, (result.errors, result.detail)
    assert refused > 0.01 * result.sent, result
    hold = GatewaySettings().shed_hold_ms
    assert result.p99_ms >= hold, result
    # Envoy's own record of the same answers holds the refusals' hold too (read from 10 ms
    # buckets, so it may sit one bucket lower), and never more than the caller waited
    # beyond a bucket's width
    assert result.gateway_p99_ms is not None, result.detail
    assert hold - 10 <= result.gateway_p99_ms <= result.p99_ms + 50, result
    assert f"p99 at Envoy {result.gateway_p99_ms:.0f} ms" in result.detail
    # ghz's own split by status: every refusal waited out the hold
    refusals = re.search(r"ResourceExhausted p99 (\d+) ms \(p50 ([\d.]+)\)", result.detail)
    assert refusals is not None, result.detail
    assert float(refusals[2]) >= hold, result.detail


def test_rolling_restart_loses_no_request(cfg: ChaosConfig) -> None:
    result = rolling_restart(dataclasses.replace(cfg, duration_s=10.0))
    _check(result)
    assert result.detail.count("drained") == 2, result.detail


def test_hot_reload_loses_no_request(cfg: ChaosConfig) -> None:
    result = hot_reload(dataclasses.replace(cfg, duration_s=6.0))
    _check(result)
    assert "v2 (polling)" in result.detail and "v3 (SIGHUP)" in result.detail, result.detail


def test_slow_model_answers_deadline_exceeded_promptly(cfg: ChaosConfig) -> None:
    result = slow(dataclasses.replace(cfg, duration_s=4.0))
    assert result.verdict == "pass", result.detail
    assert result.sent > 0 and result.succeeded == 0, result
    # prompt refusals: deadlines, or the stalled worker shedding (RESOURCE_EXHAUSTED)
    codes = {k for k in result.errors if " " not in k}
    assert codes and codes <= {"DeadlineExceeded", "ResourceExhausted"}, result


def test_chaos_exits_nonzero_when_a_fault_loses_requests(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repository: Path
) -> None:
    lossy = FaultResult("kill -9", sent=10, succeeded=9, failed=1, verdict="FAIL")
    clean = FaultResult("rolling restart", sent=10, succeeded=10)
    monkeypatch.setitem(FAULTS, "kill", lambda cfg: lossy)
    monkeypatch.setitem(FAULTS, "rolling", lambda cfg: clean)
    argv = ["--model-repository", str(repository), "--out", str(tmp_path), "--doc", ""]
    assert main([*argv, "--faults", "rolling"]) == 0
    assert main([*argv, "--faults", "kill", "rolling"]) == 1
    assert "| kill -9 | 10 | 9 | 1 |" in (tmp_path / "chaos.md").read_text()
