"""Server-side percentiles per bench run come from the server's own latency histogram,
interpolated as Prometheus's histogram_quantile does."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from loadtest.runner import SCENARIO_DIR, histogram_quantile, load_scenario


def test_quantiles_interpolate_inside_the_bucket_like_prometheus() -> None:
    # 100 observations: 50 under 1 ms, 40 in (1, 2.5] ms, 10 in (2.5, 5] ms
    counts = {0.001: 50.0, 0.0025: 90.0, 0.005: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.5, counts) == pytest.approx(0.001)
    assert histogram_quantile(0.25, counts) == pytest.approx(0.0005)  # from 0 up to 1 ms
    assert histogram_quantile(0.7, counts) == pytest.approx(0.001 + 0.0015 * 20 / 40)
    assert histogram_quantile(0.99, counts) == pytest.approx(0.0025 + 0.0025 * 9 / 10)


def test_a_quantile_past_the_last_finite_bound_is_that_bound() -> None:
    counts = {0.001: 10.0, 0.005: 90.0, math.inf: 100.0}
    assert histogram_quantile(0.99, counts) == pytest.approx(0.005)


def test_no_observations_give_no_quantile() -> None:
    assert histogram_quantile(0.99, {0.001: 0.0, math.inf: 0.0}) is None
    assert histogram_quantile(0.99, {}) is None


def test_every_bundled_scenario_loads_and_a_misspelt_threshold_is_refused(
    tmp_path: Path,
) -> None:
    for path in SCENARIO_DIR.glob("*.yaml"):
        assert load_scenario(path.stem)["runs"], path
    challenge = load_scenario("challenge")
    paced = [r for r in challenge["runs"] if r.get("rps")]
    assert paced and all(r["thresholds"]["server_p99_ms"] == 5 for r in paced)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nruns:\n  - {name: r, tool: ghz, target: grpc, payload: oip,\n"
        "     thresholds: {max_error: 0}}\n"
    )
    with pytest.raises(ValueError, match=r"unknown thresholds \['max_error'\]"):
        load_scenario(str(bad))
