"""`python -m loadtest.drift_cost`: one binning pass per size, timed and traced."""

from __future__ import annotations

import numpy as np

from loadtest.drift_cost import passes
from server import drift
from tests.observability.test_drift import feeds, handle


def test_each_size_is_binned_in_one_pass_and_the_bound_is_restored() -> None:
    rng = np.random.default_rng(3)
    colors = rng.choice(["red", "green", "blue"], 256).tolist()
    xs = rng.random(256).tolist()
    proba = rng.random((256, 1))
    proba = np.hstack([1 - proba, proba]).astype(np.float32)
    bound = drift.MAX_PENDING_ROWS
    sizes = (512, 4 * bound)  # the second is past the server's bound: still one pass
    calls: list[int] = []
    process = drift.DriftMonitor.process

    def counted(self: drift.DriftMonitor) -> None:
        calls.append(self._pending_rows)
        process(self)

    drift.DriftMonitor.process = counted  # type: ignore[method-assign]
    try:
        rows = passes(handle(), [feeds(colors, xs)], [proba], sizes, rounds=2)
    finally:
        drift.DriftMonitor.process = process  # type: ignore[method-assign]
    assert [r["rows"] for r in rows] == list(sizes)
    # two timed passes and one traced, each over all the rows at once
    assert calls == [512] * 3 + [4 * bound] * 3
    assert all(r["ms"] > 0 and r["peak_mib"] > 0 for r in rows)
    assert rows[1]["peak_mib"] > rows[0]["peak_mib"]
    assert bound == drift.MAX_PENDING_ROWS
