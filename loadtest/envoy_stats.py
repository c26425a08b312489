"""Envoy's own request-time histogram, read from its admin interface.

A load generator on the same machine as the stack times each answer from its own side: its
figure includes the time the answer waited for the load generator to be scheduled, which on
a saturated 2-core machine is tens of milliseconds. Envoy's ``downstream_rq_time`` (first
byte of the request in to last byte of the reply out, per listener) is the latency the
stack itself gave, so the overload faults report its p99 next to the load generator's.

Envoy merges its threads' histograms into what the admin interface shows once per stats
flush (every 5 s by default): :func:`settled` waits until a phase's answers are all in.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from loadtest.runner import histogram_quantile

__all__ = ["Histogram", "parse", "read", "settled"]

#: Envoy's request time per HTTP connection manager, in milliseconds
FAMILY = "envoy_http_downstream_rq_time"
#: the connection manager of the gateway's API listener (``stat_prefix: api``)
API_PREFIX = "api"


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound (ms, ascending, the last one ``inf``)."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]

    @property
    def count(self) -> int:
        return int(self.cumulative[-1]) if self.cumulative else 0

    def __sub__(self, earlier: Histogram) -> Histogram:
        """The observations made between ``earlier`` and this reading."""
        if earlier.bounds != self.bounds:
            raise ValueError("histograms with different buckets")
        diff = tuple(a - b for a, b in zip(self.cumulative, earlier.cumulative, strict=True))
        return Histogram(self.bounds, diff)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile as Prometheus's ``histogram_quantile`` gives it
        (:func:`loadtest.runner.histogram_quantile`); None without observations."""
        if not 0.0 <= q <= 1.0:
            raise ValueError("q must be within [0, 1]")
        return histogram_quantile(q, dict(zip(self.bounds, self.cumulative, strict=True)))


def parse(text: str, prefix: str = API_PREFIX) -> Histogram:
    """The ``downstream_rq_time`` histogram of connection manager ``prefix`` in Envoy's
    Prometheus text (``/stats/prometheus``); empty when Envoy has not recorded one yet."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != FAMILY:
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_bucket") and (
                labels.get("envoy_http_conn_manager_prefix") == prefix
            ):
                buckets[float(labels["le"])] = sample.value
    bounds = tuple(sorted(buckets))
    return Histogram(bounds, tuple(buckets[b] for b in bounds))


def read(admin_port: int, prefix: str = API_PREFIX, host: str = "127.0.0.1") -> Histogram:
    """The histogram as Envoy's admin interface shows it now."""
    url = f"http://{host}:{admin_port}/stats/prometheus?filter=downstream_rq_time"
    with urllib.request.urlopen(url, timeout=5) as reply:
        return parse(reply.read().decode(), prefix)


def settled(
    admin_port: int, at_least: int, timeout_s: float = 30.0, prefix: str = API_PREFIX
) -> Histogram:
    """The histogram once it holds ``at_least`` observations (the answers a phase got, on
    top of the count before it), or as it stands after ``timeout_s``: Envoy shows its
    threads' observations only after a stats flush."""
    deadline = time.monotonic() + timeout_s
    while True:
        histogram = read(admin_port, prefix)
        if histogram.count >= at_least or time.monotonic() >= deadline:
            return histogram
        time.sleep(0.25)  # polling a condition, not waiting for a guessed time
