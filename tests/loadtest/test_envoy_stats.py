"""Envoy's request-time histogram as the overload faults read it: parsing, deltas, quantiles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.render import LATENCY_BUCKETS_MS
from loadtest.envoy_stats import Histogram, parse


def _exposition(values_ms: list[float], prefix: str = "api") -> str:
    """Envoy's /stats/prometheus text for one downstream_rq_time histogram of ``values_ms``."""
    lines = ["# TYPE envoy_http_downstream_rq_time histogram"]
    for bound in (*LATENCY_BUCKETS_MS, math.inf):
        le = "+Inf" if math.isinf(bound) else f"{bound:g}"
        count = sum(v <= bound for v in values_ms)
        lines.append(
            f'envoy_http_downstream_rq_time_bucket{{envoy_http_conn_manager_prefix="{prefix}",'
            f'le="{le}"}} {count}'
        )
    lines.append(
        f'envoy_http_downstream_rq_time_sum{{envoy_http_conn_manager_prefix="{prefix}"}} '
        f"{sum(values_ms)}"
    )
    lines.append(
        f'envoy_http_downstream_rq_time_count{{envoy_http_conn_manager_prefix="{prefix}"}} '
        f"{len(values_ms)}"
    )
    return "\n".join(lines) + "\n"


def _bucket_width_at(value: float) -> float:
    bounds = (0.0, *LATENCY_BUCKETS_MS)
    upper = next(i for i, b in enumerate(bounds) if b >= value)
    return bounds[upper] - bounds[upper - 1]


def test_only_the_api_listener_histogram_is_read() -> None:
    text = (
        _exposition([1.0] * 5, prefix="admin") + _exposition([70.0, 80.0, 90.0]).split("\n", 1)[1]
    )
    histogram = parse(text)
    assert histogram.count == 3
    assert histogram.bounds[-1] == math.inf
    assert 60.0 in histogram.bounds and 70.0 in histogram.bounds


def test_no_histogram_yet_has_no_quantile() -> None:
    empty = parse("# nothing recorded\n")
    assert empty.count == 0
    assert empty.quantile(0.99) is None


@pytest.mark.parametrize("seed", range(5))
def test_quantiles_of_a_delta_are_those_of_the_later_observations(seed: int) -> None:
    """The phase before is subtracted exactly; the quantile of what is left lies within one
    bucket of numpy's (the buckets are 10 ms wide where the overload figures sit)."""
    rng = np.random.default_rng(seed)
    earlier = list(rng.uniform(0, 5, 2000))  # a fast baseline phase
    later = list(np.concatenate([rng.uniform(50, 75, 3000), rng.uniform(5, 45, 1500)]))
    before = parse(_exposition(earlier))
    after = parse(_exposition(earlier + later))
    delta = after - before
    assert delta.count == len(later)
    for q in (0.5, 0.9, 0.99):
        got = delta.quantile(q)
        want = float(np.quantile(later, q))
        assert got is not None
        assert abs(got - want) <= _bucket_width_at(want), (q, got, want)


def test_a_quantile_in_the_open_bucket_is_the_highest_bound() -> None:
    histogram = parse(_exposition([10.0] * 50 + [100_000.0] * 50))
    assert histogram.quantile(0.99) == LATENCY_BUCKETS_MS[-1]
    assert histogram.quantile(0.25) == pytest.approx(10.0 - 5.0 * 0.5)


def test_histograms_with_other_buckets_do_not_subtract() -> None:
    one = Histogram((1.0, math.inf), (1.0, 2.0))
    other = Histogram((2.0, math.inf), (1.0, 2.0))
    with pytest.raises(ValueError, match="different buckets"):
        one - other
    with pytest.raises(ValueError, match="within"):
        one.quantile(1.5)
