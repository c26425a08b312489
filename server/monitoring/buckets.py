"""Reference buckets of one feature, and the population stability index over them.

A feature's training distribution (from the manifest) becomes a fixed list of buckets; live
values are counted into the same buckets, so live and reference shares compare bucket by
bucket. Pure numpy and Python: the server's workers, the tests and the reports share it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np

__all__ = ["EPSILON", "UNSEEN", "FeatureBuckets", "psi"]

#: floor of a bucket share in the PSI: an empty bucket would make ln(p/q) infinite
EPSILON = 1e-4
#: the bucket of categorical values that training never saw
UNSEEN = "__unseen__"


def psi(live: Sequence[float], reference: Sequence[float], eps: float = EPSILON) -> float:
    """Population stability index of two bucket-count (or share) vectors."""
    lt, rt = float(sum(live)), float(sum(reference))
    if lt <= 0 or rt <= 0:
        return 0.0
    total = 0.0
    for a, b in zip(live, reference, strict=True):
        p, q = max(a / lt, eps), max(b / rt, eps)
        total += (p - q) * math.log(p / q)
    return total


@dataclass
class FeatureBuckets:
    """How one feature's values map to bucket indices, and the reference share of each."""

    name: str
    kind: str  # "categorical" | "numeric"
    labels: list[str]
    reference: list[float]
    #: categorical: value -> bucket index (unseen values take the last bucket)
    index: dict[str, int] = field(default_factory=dict)
    #: numeric: inner edges for np.searchsorted, and the training range
    inner: np.ndarray | None = None
    low: float = -math.inf
    high: float = math.inf

    @classmethod
    def categorical(cls, name: str, frequencies: Mapping[str, float], known: Sequence[str]):
        cats = list(dict.fromkeys([*frequencies, *known]))
        total = sum(frequencies.values()) or 1.0
        ref = [float(frequencies.get(c, 0.0)) / total for c in cats] + [0.0]
        return cls(name, "categorical", [*cats, UNSEEN], ref, {c: i for i, c in enumerate(cats)})

    @classmethod
    def numeric(cls, name: str, edges: Sequence[float], counts: Sequence[float], rng: Any = None):
        total = float(sum(counts)) or 1.0
        bins = [f"{i:02d}" for i in range(len(counts))]
        ref = [0.0, *(float(c) / total for c in counts), 0.0]
        low, high = (float(rng[0]), float(rng[1])) if rng else (edges[0], edges[-1])
        return cls(
            name,
            "numeric",
            ["under", *bins, "over"],
            ref,
            inner=np.asarray(edges[1:-1], dtype=np.float64),
            low=low,
            high=high,
        )

    def count(self, values: np.ndarray | list[Any]) -> np.ndarray:
        """Values per bucket (a 1-D array or a list of Python scalars).

        The same counts as :meth:`count_plain`, cheaper for large batches: categories map to
        bucket indices with one ``dict.get`` per value and ``np.bincount`` (no per-value
        count objects), numbers are sorted once and cut at the edges.
        """
        n = len(self.labels)
        if self.kind == "categorical":
            listed = values if isinstance(values, list) else values.tolist()
            unseen = n - 1
            try:
                idx = np.fromiter(map(self.index.get, listed, repeat(unseen)), np.intp, len(listed))
            except TypeError:  # an unhashable value: the plain rule fails the same way
                return self.count_plain(listed)
            out = np.bincount(idx, minlength=n)
            # Values that are not str (bytes, numbers) all landed in the unseen bucket; give
            # them the plain rule, grouped as Counter groups them (7 and 7.0 are one key).
            others = [listed[i] for i in np.flatnonzero(idx == unseen).tolist()]
            others = [v for v in others if not isinstance(v, str)]
            for value, k in Counter(others).items():
                out[unseen] -= k
                out[self.index.get(_text(value), unseen)] += k
            return out
        if self.low > self.high:
            return self.count_plain(values)
        xs = np.sort(np.asarray(values, dtype=np.float64), axis=None)
        valid = len(xs)
        if valid and np.isnan(xs[-1]):  # NaNs sort last
            valid = int(np.searchsorted(np.isnan(xs), True))
        finite = xs[:valid]
        below = int(np.searchsorted(finite, self.low, side="left"))
        upto = int(np.searchsorted(finite, self.high, side="right"))
        inner = self.inner if self.inner is not None else np.empty(0)
        cuts = np.clip(np.searchsorted(finite, inner, side="left"), below, upto)
        out = np.empty(n, dtype=np.int64)
        out[0] = below
        out[1 : n - 1] = np.diff(np.concatenate(([below], cuts, [upto])))
        out[n - 1] = valid - upto
        # the plain rule puts a NaN past every inner edge: the last inner bucket
        out[n - 2] += len(xs) - valid
        return out

    def count_plain(self, values: np.ndarray | list[Any]) -> np.ndarray:
        """Values per bucket, value by value: the reference :meth:`count` must equal."""
        n = len(self.labels)
        if self.kind == "categorical":
            # Counter counts in C; only the few distinct values go through the dict
            out = np.zeros(n, dtype=np.int64)
            get, unseen = self.index.get, n - 1
            listed = values if isinstance(values, list) else values.tolist()
            for value, k in Counter(listed).items():
                out[get(value if isinstance(value, str) else _text(value), unseen)] += k
            return out
        x = np.asarray(values, dtype=np.float64)
        inner = self.inner if self.inner is not None else np.empty(0)
        idx = np.searchsorted(inner, x, side="right") + 1
        idx[x < self.low] = 0
        idx[x > self.high] = n - 1
        return np.bincount(idx, minlength=n)[:n]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
