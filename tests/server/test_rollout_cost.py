"""The rollout cost harness's arithmetic: ratios of means and medians of paired rounds."""

from __future__ import annotations

import pytest

from loadtest.rollout_cost import Round, summarize, table


def _round(variant: str, rps: float, cpu: float, **extra: int) -> Round:
    return Round(variant, rps, int(rps * 2), 0, cpu, **extra)


def test_summary_pairs_each_round_with_the_none_round_of_its_pass() -> None:
    rounds = [
        _round("none", 1000, 400), _round("shadow", 950, 420, shadow_scored=2000),
        _round("none", 2000, 300), _round("shadow", 1800, 330, shadow_scored=3600),
        _round("none", 1500, 350), _round("shadow", 1500, 350, shadow_dropped=7),
    ]  # fmt: skip
    summary = summarize(rounds)
    shadow = summary["shadow"]
    assert shadow["rps"] == [950, 1800, 1500]
    assert shadow["rps_vs_none"] == pytest.approx(4250 / 4500 - 1, abs=1e-4)
    # per pass: -5%, -10%, 0% -> median -5%, not what the ratio of the means says
    assert shadow["rps_vs_none_median_of_rounds"] == pytest.approx(-0.05)
    assert shadow["cpu_vs_none_median_of_rounds"] == pytest.approx(0.05)
    assert (shadow["shadow_scored"], shadow["shadow_dropped"]) == (5600, 7)
    assert summary["none"]["rps_vs_none"] == 0.0
    text = table(summary, {"none": "none", "shadow": "shadow 100%"})
    assert "| shadow 100% | 950, 1,800, 1,500 | 1,417 | -5.6% | -5.0% |" in text
