"""ghz's JSON report reduced to the figures the summaries use."""

from __future__ import annotations

from typing import Any

import pytest

from loadtest.ghz import parse_ghz_report


def _report(details: list[dict[str, Any]] | None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "count": 300,
        "total": 2e9,
        "rps": 150.0,
        "average": 30e6,
        "slowest": 80e6,
        "latencyDistribution": [{"percentage": 50, "latency": 50e6}],
        "statusCodeDistribution": {"OK": 100, "ResourceExhausted": 200},
    }
    if details is not None:
        report["details"] = details
    return report


def test_each_status_gets_its_own_percentiles() -> None:
    """Refusals held by the gateway and fast successes are told apart."""
    ok = [{"latency": (1 + i % 10) * 1e6, "status": "OK"} for i in range(100)]
    held = [{"latency": (50 + i % 20) * 1e6, "status": "ResourceExhausted"} for i in range(200)]
    result = parse_ghz_report(_report(ok + held))
    assert set(result.latency_by_status_ms) == {"OK", "ResourceExhausted"}
    assert result.latency_by_status_ms["OK"]["p99"] == pytest.approx(10.0)
    assert result.latency_by_status_ms["OK"]["p50"] == pytest.approx(5.5)
    refused = result.latency_by_status_ms["ResourceExhausted"]
    assert refused["p50"] == pytest.approx(59.5)
    assert refused["p99"] == pytest.approx(69.0)
    assert result.ok == 100 and result.error_kinds == {"ResourceExhausted": 200}


def test_a_report_without_details_has_no_split() -> None:
    assert parse_ghz_report(_report(None)).latency_by_status_ms == {}
