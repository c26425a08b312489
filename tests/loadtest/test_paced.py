"""`python -m loadtest.paced`: h2load at a fixed rate, every request's time from its log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loadtest.compare.run import bare_floor
from loadtest.h2load import INFER_PATH, raw_request_from_json, write_request
from loadtest.paced import CONNECTIONS, latencies_ms, measure, paced_command, summarize, table
from loadtest.runner import DATA_DIR


def test_the_rate_is_shared_by_the_connections_and_every_request_is_logged(
    tmp_path: Path,
) -> None:
    cmd = paced_command("127.0.0.1:1", tmp_path / "b", 1200, 2.5, tmp_path / "log")
    assert f"--clients={CONNECTIONS}" in cmd and f"--rps={1200 // CONNECTIONS}" in cmd
    assert "--duration=2500ms" in cmd and f"--log-file={tmp_path / 'log'}" in cmd
    assert cmd[-1] == f"http://127.0.0.1:1{INFER_PATH}"
    assert "--rps=1" in paced_command("a:1", tmp_path / "b", 1, 1, tmp_path / "log")


def test_log_lines_become_times_and_failures(tmp_path: Path) -> None:
    log = tmp_path / "h2load.log"
    log.write_text(
        "1733300000000000\t200\t1500\n1733300000001000\t200\t250\n1733300000002000\t503\t12000\n\n"
    )
    times, failed = latencies_ms(log)
    np.testing.assert_allclose(times, [1.5, 0.25, 12.0])
    assert failed == 1


def test_summary_percentiles_and_counts_over_the_bounds() -> None:
    times = np.concatenate([np.full(980, 1.0), np.full(15, 6.0), np.full(5, 20.0)])
    s = summarize(times, 2, 10.0)
    assert s["requests"] == 1000 and s["failed"] == 2 and s["rps"] == 100
    assert s["p50_ms"] == 1.0 and s["p99_ms"] == 6.0 and s["max_ms"] == 20.0
    assert s["over_5_ms"] == 20 and s["over_10_ms"] == 5
    with pytest.raises(RuntimeError, match="no request"):
        summarize(np.array([]), 0, 1.0)
    lines = table({"a": [s], "b": [s, s]}).splitlines()
    assert len(lines) == 5 and lines[2].startswith("| a | 1 | 1,000 | 2 | 100 | 1.00 |")
    assert lines[4].startswith("| b | 2 |") and lines[4].endswith("| 20.0 | 20 | 5 |")


@pytest.mark.integration
def test_a_short_paced_run_against_the_floor(tmp_path: Path) -> None:
    with bare_floor(1) as (address, _):
        first = (DATA_DIR / "oip.json").read_text()
        body = write_request(raw_request_from_json(json.loads(first)[0]), tmp_path / "b.bin")
        found = measure({"floor": address}, body, 200, 1.0, 2, tmp_path)
    assert len(found["floor"]) == 2
    for s in found["floor"]:
        # paced: at most the rate, and every request answered HTTP 200
        assert 0 < s["requests"] <= 2 * 200 and s["failed"] == 0  # unpaced: thousands
        assert 0 < s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert sorted(p.name for p in tmp_path.glob("floor-*.log")) == ["floor-0.log", "floor-1.log"]
