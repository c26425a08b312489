"""The capture benchmark's arithmetic and wiring (the load itself runs in `make bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest.monitor.capture_bench import ARMS, TARGET_PERCENT, arms_table, share_table
from loadtest.monitor.path_cost import best_times, per_request_us

ROOT = Path(__file__).resolve().parents[2]

COST = {
    "capture_0.1_record": 0.5, "capture_0.1_flush": 4.5,
    "drift_observe": 0.25, "drift_process": 2.25,
    "capture_0.1_total": 5.0, "drift_total": 2.5,
}  # fmt: skip


def test_shares_and_verdict() -> None:
    text, shares = share_table(COST, server_us=500.0)
    assert shares == {"drift": 0.5, "capture at 10%": 1.0, "capture at 10% + drift": 1.5}
    assert (
        f"1.50 % of the server's CPU per request (target: at most {TARGET_PERCENT:g} %): met"
        in (text)
    )
    _, shares = share_table(COST, server_us=200.0)
    assert shares["capture at 10% + drift"] == 3.75
    assert "NOT met" in share_table(COST, server_us=200.0)[0]


def _run(arm: str, ok: int, cpu: float, captured: int = 0) -> dict[str, object]:
    result = {"ok": ok, "rps": ok / 10, "latency_ms": {"p50": 1.0, "p99": 9.0}}
    return {"arm": arm, "result": result, "server": {"cpu_seconds": cpu}, "captured": captured}


def test_arms_table_pools_rounds() -> None:
    runs = [_run("off", 1000, 0.5), _run("off", 3000, 1.5), _run("drift+capture", 2000, 1.2, 190)]
    text, cpu_us = arms_table(runs)
    assert cpu_us == {"off": 500.0, "drift+capture": 600.0}
    assert "190 of 2,000 (9.5%)" in text
    assert "| drift |" not in text  # an arm without runs is left out


def test_best_times_keeps_each_phases_minimum_across_rounds() -> None:
    calls: list[str] = []
    timings = iter([{"a": 3.0, "b": 1.0}, {"c": 5.0}, {"a": 2.0, "b": 4.0}, {"c": 6.0}])

    def variant(name: str):  # type: ignore[no-untyped-def]
        def run() -> dict[str, float]:
            calls.append(name)
            return next(timings)

        return run

    best = best_times([variant("x"), variant("y")], repeats=2)
    assert calls == ["x", "y", "x", "y"]  # alternating rounds
    assert best == {"a": 2.0, "b": 1.0, "c": 5.0}
    assert per_request_us({"a": 0.003}, 1000) == {"a": 3.0}


def test_bench_runs_capture_with_every_scenario() -> None:
    from loadtest.cli import SCENARIOS

    assert "capture" in SCENARIOS
    assert set(ARMS) == {"off", "drift", "drift+capture"}
    assert ARMS["drift+capture"]["PRONTO_CAPTURE_SAMPLE_RATE"] == "0.1"
    out = subprocess.run(
        [sys.executable, "-m", "loadtest.monitor.capture_bench", "--help"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    assert "--duration" in out and "--rounds" in out


def test_pronto_bench_capture_uses_the_bench_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`pronto bench capture` hands its repository, data, workers and results folder on."""
    from loadtest import bench
    from loadtest.cli import BenchSettings
    from loadtest.monitor import capture_bench

    seen: dict[str, Any] = {}

    def fake(args: Any, command: str) -> bool:
        seen.update(vars(args), command=command)
        return True

    monkeypatch.setattr(capture_bench, "run_capture_bench", fake)
    settings = BenchSettings(
        model_repository=tmp_path / "models", results_dir=tmp_path / "results", workers=3
    )
    assert bench.run_bench("capture", settings, "pronto bench capture")
    assert seen["model_repository"] == tmp_path / "models"
    assert seen["out"] == tmp_path / "results" / "capture"
    assert seen["workers"] == 3 and seen["rps"] == 1200
    assert seen["command"] == "pronto bench capture"
