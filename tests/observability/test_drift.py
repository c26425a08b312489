"""Drift accumulation in one process: buckets, PSI, counters, robustness to odd inputs."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from pronto_contract import Manifest
from server.drift import (
    MAX_PENDING_ROWS,
    SAMPLE_REQUESTS,
    SAMPLE_ROWS,
    SCORE_FEATURE,
    DriftMonitor,
    FeatureBuckets,
    psi,
)

MANIFEST: dict[str, Any] = {
    "signature": {
        "inputs": [
            {"name": "color", "kind": "categorical", "categories": ["red", "green", "blue"]},
            {"name": "x", "kind": "numeric", "range": [0.0, 1.0]},
        ],
        "classes": ["0", "1"],
        "positive_class": "1",
    },
    "reference": {
        "features": {
            "color": {
                "kind": "categorical",
                "frequencies": {"red": 0.5, "green": 0.3, "blue": 0.2},
            },
            "x": {
                "kind": "numeric",
                "edges": [0.0, 0.25, 0.5, 0.75, 1.0],
                "counts": [25, 25, 25, 25],
                "min": 0.0,
                "max": 1.0,
            },
        },
        "score": {
            "of": "positive_class_probability",
            "edges": [0.0, 0.5, 1.0],
            "counts": [80, 20],
        },
    },
    "metrics": {"confusion_matrix": {"labels": ["0", "1"], "matrix": [[70, 10], [10, 10]]}},
}


def handle(manifest: dict[str, Any] = MANIFEST) -> Any:
    return SimpleNamespace(
        name="m",
        version_str="1",
        classes=("0", "1"),
        manifest=Manifest.parse(manifest),
        feature_sources={},
    )


def feeds(colors: list[Any], xs: list[float]) -> dict[str, np.ndarray]:
    return {
        "color": np.array(colors, dtype=object).reshape(-1, 1),
        "x": np.array(xs, dtype=np.float32).reshape(-1, 1),
    }


def test_psi_is_zero_for_equal_shares_and_grows_with_shift() -> None:
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    small = psi([45, 55], [50, 50])
    big = psi([10, 90], [50, 50])
    assert 0 < small < 0.1 < 0.2 < big
    # hand-computed: (0.1-0.5) ln(0.1/0.5) + (0.9-0.5) ln(0.9/0.5)
    assert big == pytest.approx(0.4 * math.log(5) + 0.4 * math.log(1.8))


def test_empty_bucket_is_floored_not_infinite() -> None:
    assert math.isfinite(psi([0, 10], [10, 0]))


def test_numeric_buckets_count_out_of_range_on_both_sides() -> None:
    fb = FeatureBuckets.numeric("x", [0.0, 0.5, 1.0], [1, 1], [0.0, 1.0])
    assert fb.labels == ["under", "00", "01", "over"]
    counts = fb.count(np.array([-1.0, 0.0, 0.49, 0.5, 1.0, 10.0]))
    assert counts.tolist() == [1, 2, 2, 1]


def test_categorical_buckets_count_unseen_values() -> None:
    fb = FeatureBuckets.categorical("c", {"a": 0.75, "b": 0.25}, ["a", "b", "c"])
    assert fb.labels == ["a", "b", "c", "__unseen__"]
    assert fb.reference == [0.75, 0.25, 0.0, 0.0]
    counts = fb.count(np.array(["a", "a", "z", b"b", 7], dtype=object))
    assert counts.tolist() == [2, 1, 0, 2]


def test_monitor_bins_pending_requests_at_flush_time() -> None:
    mon = DriftMonitor(export=False)
    h = handle()
    mon.register(h)
    proba = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    mon.observe(h, feeds(["red", "purple"], [0.1, 10.0]), proba, 2)
    mon.observe(h, feeds(["blue"], [-3.0]), None, 1)
    assert mon._pending  # nothing binned on the request path
    mon.process()
    ref = mon._models[("m", "1")]
    assert ref.counts["color"].tolist() == [1, 0, 1, 1]
    assert ref.counts["x"].tolist() == [1, 1, 0, 0, 0, 1]
    assert ref.counts[SCORE_FEATURE].tolist() == [0, 1, 1, 0]
    assert (ref.rows, ref.positives) == (2, 1)
    assert ref.score_hist.sum() == 2 and ref.score_sum == pytest.approx(0.9, abs=1e-6)
    assert ref.reference_positive_rate == pytest.approx(0.2)


def test_large_batches_are_binned_in_bounded_chunks_with_the_same_counts() -> None:
    """Between two flushes a worker serving large batches would hold every row's inputs and
    then bin them in one long pass that stalls its event loop: past the bound, the rows
    waiting are binned at once, and the counts come out as one pass would give them."""
    rng = np.random.default_rng(1)
    rows = 1024
    requests = 3 * MAX_PENDING_ROWS // rows + 5
    colors = rng.choice(["red", "green", "blue", "teal"], requests * rows).tolist()
    xs = (rng.random(requests * rows) * 1.4 - 0.2).tolist()
    probas = rng.random((requests * rows, 1))
    probas = np.hstack([1 - probas, probas]).astype(np.float32)
    mon = DriftMonitor(export=False, sample_rows=0)  # every row, to compare counts exactly
    h = handle()
    mon.register(h)
    held = []
    for i in range(requests):
        part = slice(i * rows, (i + 1) * rows)
        mon.observe(h, feeds(colors[part], xs[part]), probas[part], rows)
        held.append(mon._pending_rows)
    assert max(held) < MAX_PENDING_ROWS
    assert min(held) == 0  # binned on the way, not only at flush time
    mon.process()
    ref = mon._models[("m", "1")]
    by_name = {fb.name: fb for fb in ref.buckets()}
    assert ref.counts["color"].tolist() == by_name["color"].count_plain(colors).tolist()
    x32 = np.asarray(xs, dtype=np.float32)
    assert ref.counts["x"].tolist() == by_name["x"].count_plain(x32).tolist()
    assert ref.rows == requests * rows
    assert ref.positives == int(np.count_nonzero(probas[:, 1] > probas[:, 0]))


def _batch(rng: np.random.Generator, rows: int) -> tuple[list[str], list[float], np.ndarray]:
    colors = rng.choice(["red", "green", "blue", "teal"], rows, p=[0.5, 0.3, 0.15, 0.05])
    xs = (rng.random(rows) * 1.4 - 0.2).tolist()
    p = rng.random((rows, 1))
    return colors.tolist(), xs, np.hstack([1 - p, p]).astype(np.float32)


def _exact(colors: list[str], xs: list[float], probas: np.ndarray) -> dict[str, list[int]]:
    """What counting every row gives."""
    mon = DriftMonitor(export=False, sample_rows=0)
    mon.observe(handle(), feeds(colors, xs), probas, len(colors))
    mon.process()
    return {k: v.tolist() for k, v in mon._models[("m", "1")].counts.items()}


@pytest.mark.parametrize("every", [1, 3, SAMPLE_REQUESTS])
@pytest.mark.parametrize(("rows", "stride"), [(256, 8), (100, 3), (64, 2)])
def test_a_large_request_keeps_a_sample_and_turns_its_offset_so_every_row_counts_alike(
    rows: int, stride: int, every: int
) -> None:
    """Sent ``stride * every`` times, a request has each of its rows sampled exactly once,
    counted ``stride * every`` times: the counts are those of every row of every copy. The
    copies that give no sample give their scores."""
    colors, xs, probas = _batch(np.random.default_rng(rows), rows)
    mon = DriftMonitor(export=False, sample_requests=every)
    h = handle()
    request = feeds(colors, xs)
    copies = stride * every
    for _ in range(copies):
        mon.observe(h, request, probas, rows)
    sampled = [(f, w) for _, f, _, _, w in mon._pending if w]
    kept = [len(f["color"]) for f, _ in sampled]
    assert len(sampled) == stride
    assert sum(kept) == rows and max(kept) <= rows // stride + 1 < rows
    assert all(w == stride * every for _, w in sampled)
    assert all(not f for _, f, _, _, w in mon._pending if not w)  # scores only
    assert [w > 0 for *_, w in mon._pending] == [i % every == 0 for i in range(copies)]
    # copies: the request's own arrays are not held until the flush
    assert not any(np.shares_memory(f["color"], request["color"]) for f, _ in sampled)
    # the requests that gave no sample count the rows a sample would have held, about
    assert rows * every - copies < mon._pending_rows <= rows * every
    mon.process()
    got = {k: v.tolist() for k, v in mon._models[("m", "1")].counts.items()}
    exact = _exact(colors * copies, xs * copies, np.vstack([probas] * copies))
    assert got == exact
    ref = mon._models[("m", "1")]
    assert ref.rows == copies * rows
    assert ref.sampled == rows  # observed: each row once
    assert ref.positives == copies * int(np.count_nonzero(probas[:, 1] > probas[:, 0]))


def test_versions_served_in_turn_each_have_every_row_sampled_once() -> None:
    """Two model versions whose large requests alternate: each version's requests take
    their own turns, so neither always lands on the turns that give no sample."""
    colors, xs, probas = _batch(np.random.default_rng(9), 64)
    mon = DriftMonitor(export=False)
    one, two = handle(), handle()
    two.version_str = "2"
    copies = 2 * SAMPLE_REQUESTS  # a stride of 2
    for _ in range(copies):
        mon.observe(one, feeds(colors, xs), probas, 64)
        mon.observe(two, feeds(colors, xs), probas, 64)
    mon.process()
    exact = _exact(colors * copies, xs * copies, np.vstack([probas] * copies))
    for version in ("1", "2"):
        ref = mon._models[("m", version)]
        assert {k: v.tolist() for k, v in ref.counts.items()} == exact, version
        assert ref.sampled == 64 and ref.rows == 64 * copies, version


def test_sampled_counts_estimate_the_rows_served() -> None:
    """Many different 256-row requests: the sampled counts are multiples of the weight of a
    sampled row, add up to the rows served, and give every bucket's share within a point;
    scores, rows and positives are exact."""
    rng = np.random.default_rng(7)
    mon = DriftMonitor(export=False)
    h = handle()
    n = 200 * SAMPLE_REQUESTS  # 200 samples of 32 rows observed
    batches = [_batch(rng, 256) for _ in range(n)]
    for colors, xs, probas in batches:
        mon.observe(h, feeds(colors, xs), probas, 256)
    # a pass ran on the way; what waits is what came after it
    assert mon._pending_rows == n * SAMPLE_ROWS % MAX_PENDING_ROWS
    mon.process()
    ref = mon._models[("m", "1")]
    exact = _exact(
        [c for b in batches for c in b[0]],
        [x for b in batches for x in b[1]],
        np.vstack([b[2] for b in batches]),
    )
    for name in ("color", "x"):
        got = ref.counts[name]
        assert got.sum() == n * 256 and not (got % (8 * SAMPLE_REQUESTS)).any(), name
        shares = got / got.sum() - np.asarray(exact[name]) / sum(exact[name])
        assert np.abs(shares).max() < 0.01, (name, got.tolist(), exact[name])
        assert got.tolist() != exact[name]  # a sample, not every row
    assert ref.counts[SCORE_FEATURE].tolist() == exact[SCORE_FEATURE]
    assert ref.rows == n * 256
    assert ref.sampled == n // SAMPLE_REQUESTS * SAMPLE_ROWS  # each observed once


def test_single_rows_and_sampled_batches_add_up_in_one_flush() -> None:
    colors, xs, probas = _batch(np.random.default_rng(3), 64)
    mon = DriftMonitor(export=False)
    h = handle()
    mon.observe(h, feeds(["teal"], [0.3]), probas[:1], 1)
    copies = 2 * SAMPLE_REQUESTS  # a stride of 2: each row sampled once over these
    for _ in range(copies):
        mon.observe(h, feeds(colors, xs), probas, 64)
    mon.process()
    got = {k: v.tolist() for k, v in mon._models[("m", "1")].counts.items()}
    exact = _exact(
        ["teal", *colors * copies], [0.3, *xs * copies], np.vstack([probas[:1], *[probas] * copies])
    )
    assert got == exact


def test_a_bad_request_beside_a_sampled_one_costs_only_itself() -> None:
    """The flush fails on the bad request and bins each request on its own: the sampled
    one, already gathered, is counted once, and so are the scores of one that gave none."""
    colors, xs, probas = _batch(np.random.default_rng(4), 64)
    mon = DriftMonitor(export=False)
    h = handle()
    mon.observe(h, feeds(colors, xs), probas, 64)
    mon.observe(h, feeds(colors, xs), probas, 64)  # scores only
    bad = {"color": np.array([["red", "blue"]], dtype=object), "x": np.array([[0.5, 0.6]])}
    mon.observe(h, bad, None, 1)  # one row announced, two given
    mon.process()
    alone = DriftMonitor(export=False)
    alone.observe(h, feeds(colors, xs), probas, 64)
    alone.observe(h, feeds(colors, xs), probas, 64)
    alone.process()
    got = {k: v.tolist() for k, v in mon._models[("m", "1")].counts.items()}
    assert got == {k: v.tolist() for k, v in alone._models[("m", "1")].counts.items()}
    assert sum(got["color"]) == 64 * SAMPLE_REQUESTS
    assert sum(got[SCORE_FEATURE]) == 2 * 64 == mon._models[("m", "1")].rows


def test_counting_every_row_and_requests_that_cannot_be_sampled_stay_exact() -> None:
    colors, xs, probas = _batch(np.random.default_rng(5), 256)
    every = DriftMonitor(export=False, sample_rows=0)
    every.observe(handle(), feeds(colors, xs), probas, 256)
    assert every._pending_rows == 256
    every.process()
    assert {k: v.tolist() for k, v in every._models[("m", "1")].counts.items()} == _exact(
        colors, xs, probas
    )
    # an input whose rows do not match the request's: no sample, every row counted, for
    # itself and for the requests that give no sample until the next one that does
    odd, h = DriftMonitor(export=False), handle()
    for _ in range(SAMPLE_REQUESTS):
        odd.observe(h, feeds(colors, xs) | {"extra": np.zeros(3)}, probas, 256)
    assert odd._pending[0][4] == SAMPLE_REQUESTS and len(odd._pending[0][1]["color"]) == 256
    assert all(not f for _, f, *_ in odd._pending[1:])
    odd.process()
    ref = odd._models[("m", "1")]
    assert (
        ref.counts["color"].tolist()
        == (np.asarray(_exact(colors, xs, probas)["color"]) * SAMPLE_REQUESTS).tolist()
    )
    assert ref.sampled == 256 and ref.rows == 256 * SAMPLE_REQUESTS


def test_shifted_feature_crosses_threshold_untouched_one_does_not() -> None:
    rng = np.random.default_rng(0)
    mon = DriftMonitor(export=False, sample_rows=0)  # 4,000 rows: every one counted
    h = handle()
    colors = rng.choice(["red", "green", "blue"], 4000, p=[0.5, 0.3, 0.2]).tolist()
    xs = (rng.random(4000) * 0.5 + 0.6).tolist()  # shifted up, partly out of range
    for i in range(0, 4000, 100):
        mon.observe(h, feeds(colors[i : i + 100], xs[i : i + 100]), None, 100)
    mon.process()
    ref = mon._models[("m", "1")]
    by_name = {fb.name: fb for fb in ref.buckets()}
    assert psi(ref.counts["color"].tolist(), by_name["color"].reference) < 0.01
    assert psi(ref.counts["x"].tolist(), by_name["x"].reference) > 0.2
    assert ref.counts["x"][-1] > 0


@pytest.mark.parametrize(
    "bad",
    [
        {"color": np.array([[{"a": 1}]], dtype=object), "x": np.array([[0.5]])},
        {"color": np.array([["red"]], dtype=object), "x": np.array([[np.nan]])},
        {"color": np.array([["red"]], dtype=object)},  # a feature missing
        {"color": np.array([[None, "red"]], dtype=object), "x": np.array([["zz"]], dtype=object)},
    ],
)
def test_odd_inputs_never_raise(bad: dict[str, np.ndarray]) -> None:
    mon = DriftMonitor(export=False)
    h = handle()
    mon.observe(h, bad, np.array([[0.5]]), 1)
    mon.observe(h, feeds(["red"], [0.5]), "not an array", 1)
    mon.process()  # must not raise
    assert not mon._pending and mon._pending_rows == 0
    ref = mon._models[("m", "1")]
    before = {name: ref.counts[name].copy() for name in ("color", "x") if name in ref.counts}
    rows = ref.rows
    # the monitor keeps working afterwards: a good request is counted in full
    mon.observe(h, feeds(["red"], [0.3]), np.array([[0.8, 0.2]]), 1)
    mon.process()
    assert ref.rows == rows + 1
    by_name = {fb.name: fb for fb in ref.buckets()}
    for name, value in (("color", "red"), ("x", 0.3)):
        added = ref.counts[name] - before.get(name, 0)
        assert added.sum() == 1, (name, added)
        # in the bucket a direct count puts it in
        np.testing.assert_array_equal(added, by_name[name].count(np.array([value], dtype=object)))
    mon.flush()


def test_manifest_without_reference_is_ignored() -> None:
    mon = DriftMonitor(export=False)
    h = handle({"signature": {"inputs": []}})
    mon.register(h)
    mon.observe(h, feeds(["red"], [0.5]), None, 1)
    mon.flush()
    assert mon._models[("m", "1")].features == {}


def test_disabled_monitor_keeps_nothing() -> None:
    mon = DriftMonitor(enabled=False, export=False)
    mon.observe(handle(), feeds(["red"], [0.5]), None, 1)
    assert not mon._pending


def test_every_large_request_gives_a_sample_at_least_once_in_a_while() -> None:
    with pytest.raises(ValueError, match="sample_requests"):
        DriftMonitor(export=False, sample_requests=0)
