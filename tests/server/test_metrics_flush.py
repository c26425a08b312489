"""The recorder's flush writes each latency histogram once per bucket, not once per request:
what Prometheus reads must be exactly what observing each request would have given."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

from server.metrics import LATENCY_BUCKETS, observe_all

# every bound itself (observe() counts a value equal to a bound in that bucket), values
# between, below the first bound, past the last finite one, zero and a repeated value
VALUES = [
    *LATENCY_BUCKETS,
    *(b * 1.01 for b in LATENCY_BUCKETS),
    0.0,
    0.00001,
    7.5,
    120.0,
    0.003,
    0.003,
    0.003,
]


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(registry: CollectorRegistry, prefix: str) -> Samples:
    """The samples of histogram ``prefix``, keyed without the prefix."""
    return {
        (s.name.removeprefix(prefix), tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith(prefix) and not s.name.endswith("_created")
    }


def _pair(registry: CollectorRegistry) -> tuple[Histogram, Histogram]:
    def histogram(name: str) -> Histogram:
        return Histogram(name, name, ["model"], registry=registry, buckets=LATENCY_BUCKETS)

    return histogram("one_by_one"), histogram("all")


def _same_exposition(registry: CollectorRegistry) -> None:
    one, every = _samples(registry, "one_by_one"), _samples(registry, "all")
    assert one and one.keys() == every.keys()
    for key, value in one.items():
        assert every[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert one[("_count", (("model", "m"),))] == len(VALUES) * 2


def test_flushing_in_one_pass_gives_the_histogram_of_each_observation() -> None:
    registry = CollectorRegistry()
    by_one, at_once = _pair(registry)
    for _ in range(2):  # twice: counts add to what a flush before left
        for v in VALUES:
            by_one.labels("m").observe(v)
        observe_all(at_once.labels("m"), VALUES)
    _same_exposition(registry)


def test_the_same_in_multiprocess_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As the workers run: values in mmapped files, merged by the collector."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    by_one, at_once = _pair(CollectorRegistry())
    for _ in range(2):
        for v in VALUES:
            by_one.labels("m").observe(v)
        observe_all(at_once.labels("m"), VALUES)
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=str(tmp_path))
    _same_exposition(merged)


def test_an_unknown_histogram_is_observed_value_by_value() -> None:
    seen: list[float] = []

    class Plain:
        def observe(self, value: float) -> None:
            seen.append(value)

    observe_all(Plain(), [0.1, 0.2])
    assert seen == [0.1, 0.2]


def test_an_unlabelled_parent_is_refused_as_observe_refuses_it() -> None:
    parent = Histogram("parent", "p", ["model"], registry=CollectorRegistry())
    with pytest.raises(ValueError):
        parent.observe(1.0)
    with pytest.raises(ValueError):
        observe_all(parent, [1.0])
