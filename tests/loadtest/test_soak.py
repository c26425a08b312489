"""The soak's verdict and table: the rules it judges, and Envoy's p99 reported beside them."""

from __future__ import annotations

from typing import Any

from loadtest.soak import _verdict, markdown


def _window(i: int, p99: float, at_envoy: float | None, rss: float = 100.0) -> dict[str, Any]:
    return {
        "window": i, "sent": 1000, "ok": 1000, "failed": 0, "rps": 100.0, "p50_ms": 1.0,
        "p99_ms": p99, "envoy_p99_ms": at_envoy, "server_rss_mib": rss, "envoy_rss_mib": 50.0,
    }  # fmt: skip


def test_a_window_whose_p99_jumps_fails_and_envoy_shows_whose_time_it_was() -> None:
    windows = [_window(1, 6.0, 4.0), _window(2, 7.0, 4.2), _window(3, 11.0, 4.1)]
    result = _verdict(windows, peak=200.0, rps=100, duration=30.0, window=10.0)
    assert result["verdict"] == "FAIL"  # 11 > 1.5 x 7
    assert result["p99_max_ms"] == 11.0 and result["p99_median_ms"] == 7.0
    assert result["envoy_p99_median_ms"] == 4.1 and result["envoy_p99_max_ms"] == 4.2
    text = markdown(result)
    assert "| p99 ms | p99 at Envoy ms |" in text
    assert "| 3 | 1000 | 0 | 100.0 | 1.0 | 11.0 | 4.1 | 100.0 | 50.0 |" in text
    assert "(at Envoy: median 4.1 ms, max 4.2 ms)" in text


def test_steady_windows_pass_and_a_window_without_envoy_figures_is_left_out() -> None:
    windows = [_window(1, 6.0, None), _window(2, 6.5, 4.0), _window(3, 7.0, 5.0, rss=104.0)]
    result = _verdict(windows, peak=None, rps=100, duration=30.0, window=10.0)
    assert result["verdict"] == "pass"
    assert result["envoy_p99_median_ms"] == 4.5 and result["envoy_p99_max_ms"] == 5.0


def test_memory_growth_of_five_percent_fails() -> None:
    windows = [_window(1, 6.0, 4.0), _window(2, 6.0, 4.0, rss=105.0)]
    assert _verdict(windows, peak=None, rps=100, duration=20.0, window=10.0)["verdict"] == "FAIL"
