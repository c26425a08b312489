"""Input and prediction drift against the reference statistics in a model's manifest.

The hot path only appends the request's already-built input arrays to a list
(:meth:`DriftMonitor.observe`); the metrics timer bins everything gathered since the last
flush in one vectorised pass per feature and moves the counts into Prometheus counters.
Large batches are binned sooner, once :data:`MAX_PENDING_ROWS` rows wait.

A request of many rows has its inputs counted from a sample (:data:`SAMPLE_ROWS`): every
k-th row, from an offset that turns from one such request of a model version to its next.
Only every m-th such request (:data:`SAMPLE_REQUESTS`) gives its sample; the others give
their scores alone, and each sampled row is counted k x m times. Every row has the same
chance to be counted, so the bucket counts stay unbiased estimates of the rows served (exact
for single rows and small batches), while 256-row requests cost the binning of 32 rows in
every m-th and, in the others, little more than keeping their scores. Scores are always
counted in full.

Each feature's reference distribution becomes a fixed set of buckets: one per training
category plus ``__unseen__`` for categorical features; the ten training histogram bins plus
``under`` and ``over`` for numeric ones. Workers export raw counts per bucket
(``pronto_drift_bucket_total``) and the reference share of each bucket
(``pronto_drift_reference_ratio``); the population stability index is a recording rule
(``pronto:drift_psi:1h``), because only counts summed over every worker of every pod
before the division give the PSI of the traffic the model actually saw (see docs/slo.md).
:func:`psi` computes the same number in Python for tests and reports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np

from server.model import ModelHandle
from server.monitoring.buckets import EPSILON, FeatureBuckets, psi

__all__ = [
    "EPSILON",
    "SCORE_BOUNDS",
    "SCORE_FEATURE",
    "DriftMonitor",
    "FeatureBuckets",
    "ModelReference",
    "psi",
]

log = logging.getLogger(__name__)

#: the prediction score is binned like a feature under this name
SCORE_FEATURE = "__score__"
#: upper bounds of the ``pronto_prediction_score`` histogram (+Inf is implied)
SCORE_BOUNDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_SCORE_BOUNDS = np.asarray(SCORE_BOUNDS)
#: from this many pending rows, bin now rather than wait for the timer. It bounds what a
#: worker serving large batches holds between flushes (each row's decoded inputs) and how
#: long one binning pass holds its event loop (on a 2-vCPU VM, 12 ms for this many
#: flight-delay rows, over 100 ms for a second of 256-row traffic); per row, larger passes
#: are no cheaper (``python -m loadtest.drift_cost``).
MAX_PENDING_ROWS = 16_384
#: inputs of a request with at least twice this many rows are counted from a sample of
#: ``rows // SAMPLE_ROWS``-th rows (``pronto serve --drift-sample-rows``; 0 counts every row)
SAMPLE_ROWS = 32
#: of the requests sampled that way, every this-many-th gives its sample, each row then
#: counted ``k * SAMPLE_REQUESTS`` times; the others only their scores
#: (``pronto serve --drift-sample-requests``; 1: every such request gives a sample)
SAMPLE_REQUESTS = 8


@dataclass
class ModelReference:
    """Reference buckets of one model version, and the running counts since the last flush."""

    name: str
    version: str
    features: dict[str, FeatureBuckets]
    score: FeatureBuckets | None
    score_of: str
    positive_index: int | None
    positive_class: str | None
    reference_positive_rate: float | None = None
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    rows: int = 0
    #: rows whose inputs were counted, each once whatever its weight (a PSI's support)
    sampled: int = 0
    positives: int = 0
    #: scores per bucket of :data:`SCORE_BOUNDS` (Prometheus ``le`` semantics) and their sum
    score_hist: np.ndarray = field(default_factory=lambda: np.zeros(len(SCORE_BOUNDS) + 1, int))
    score_sum: float = 0.0

    @classmethod
    def from_handle(cls, handle: ModelHandle) -> ModelReference:
        manifest = handle.manifest
        signature, ref = manifest.signature, manifest.reference
        features: dict[str, FeatureBuckets] = {}
        for name, stats in ref.features.items():
            info = signature.feature(name)
            if stats.kind == "categorical":
                categories = info.categories if info is not None else ()
                features[name] = FeatureBuckets.categorical(name, stats.frequencies, categories)
            elif stats.edges and stats.counts:
                value_range = info.range if info is not None else None
                features[name] = FeatureBuckets.numeric(
                    name, stats.edges, stats.counts, value_range
                )
        score_stats = ref.score
        score = None
        if score_stats is not None and score_stats.edges and score_stats.counts:
            score = FeatureBuckets.numeric(SCORE_FEATURE, score_stats.edges, score_stats.counts)
        classes = list(handle.classes or ())
        positive = signature.positive_class
        pos_index = classes.index(positive) if positive in classes else None
        return cls(
            handle.name,
            handle.version_str,
            features,
            score,
            score_stats.of if score_stats is not None else "positive_class_probability",
            pos_index,
            positive,
            manifest.metrics.predicted_positive_rate(positive),
        )

    @property
    def score_name(self) -> str:
        return SCORE_FEATURE

    def buckets(self) -> list[FeatureBuckets]:
        return [*self.features.values(), *([self.score] if self.score is not None else [])]

    def add(
        self,
        feeds: Mapping[str, np.ndarray | list[Any]],
        proba: np.ndarray | None,
        weight: int = 1,
    ) -> None:
        """Count input columns (each value ``weight`` times: a sampled row stands for that
        many) and the scores of ``proba``."""
        counted = 0
        for name, fb in self.features.items():
            column = feeds.get(name)
            if column is not None:
                values = column if isinstance(column, list) else column.reshape(-1)
                self._count(fb, values, weight)
                counted = max(counted, len(values))
        self.sampled += counted
        if proba is not None and proba.ndim == 2 and len(proba):
            if self.positive_index is not None and self.score_of == "positive_class_probability":
                scores = proba[:, self.positive_index]
                self.positives += int(
                    np.count_nonzero(np.argmax(proba, axis=1) == self.positive_index)
                )
            else:
                scores = proba.max(axis=1)
            self.rows += len(scores)
            self.score_sum += float(scores.sum())
            hist = np.bincount(np.searchsorted(_SCORE_BOUNDS, scores, side="left"))
            self.score_hist[: len(hist)] += hist[: len(self.score_hist)]
            if self.score is not None:
                self._count(self.score, np.clip(scores, 0.0, 1.0))

    def _count(self, fb: FeatureBuckets, values: np.ndarray | list[Any], weight: int = 1) -> None:
        counts = fb.count(values)
        if weight != 1:
            counts = counts * weight
        acc = self.counts.get(fb.name)
        self.counts[fb.name] = counts if acc is None else acc + counts


class DriftMonitor:
    """Per-process drift accumulation for every loaded model version."""

    def __init__(
        self,
        enabled: bool = True,
        export: bool = True,
        sample_rows: int = SAMPLE_ROWS,
        sample_requests: int = SAMPLE_REQUESTS,
    ) -> None:
        if sample_requests < 1:
            raise ValueError(f"sample_requests must be at least 1, not {sample_requests}")
        self.enabled = enabled
        self._export = export
        self.sample_rows = sample_rows
        self.sample_requests = sample_requests
        self._metrics: Any = None
        self._models: dict[tuple[str, str], ModelReference] = {}
        #: (handle, inputs kept, probabilities, rows served, weight of each kept row; 0:
        #: scores only)
        self._pending: list[tuple[ModelHandle, Mapping[str, np.ndarray], Any, int, int]] = []
        self._pending_rows = 0
        #: per model version (by id), its sampled requests so far: which give a sample, and
        #: from which offset (one count for all would let versions served in turn always
        #: land on the same turns)
        self._turns: dict[int, int] = {}

    # -- hot path --------------------------------------------------------------
    def observe(
        self, handle: ModelHandle, feeds: Mapping[str, np.ndarray], proba: Any, rows: int
    ) -> None:
        """Remember one served request's inputs (a sample of them for a large batch, or none
        but its scores) and scores; binning waits for the timer, or runs now once
        :data:`MAX_PENDING_ROWS` rows wait."""
        if not self.enabled:
            return
        stride = rows // self.sample_rows if self.sample_rows else 1
        kept = rows
        if stride > 1:
            every, key = self.sample_requests, id(handle)
            turn = self._turns.get(key, 0)
            self._turns[key] = turn + 1
            if turn % every:
                # scores only; it counts the rows a sample would have, so that binning
                # passes come as often and what waits for one stays as bounded
                feeds, stride, kept = {}, 0, rows // stride
            elif all(
                isinstance(a, np.ndarray) and a.ndim and len(a) == rows for a in feeds.values()
            ):
                start = turn // every % stride
                # copies, so the request's full arrays are not held until the flush
                feeds = {name: a[start::stride].copy() for name, a in feeds.items()}
                kept = len(range(start, rows, stride))
                stride *= every
            else:  # inputs that cannot be sampled row-wise: every row, for the skipped too
                stride = every
        else:
            stride = 1
        self._pending.append((handle, feeds, proba, rows, stride))
        self._pending_rows += kept
        if self._pending_rows >= MAX_PENDING_ROWS:
            self.process()

    # -- timer -----------------------------------------------------------------
    def register(self, handle: ModelHandle) -> None:
        """Create a model version's series at load time, so rates start from zero."""
        if not self.enabled:
            return
        try:
            self._reference(handle)
        except Exception:  # a manifest without usable statistics must not stop serving
            log.exception("drift: cannot read reference statistics of %s", handle.name)

    def _reference(self, handle: ModelHandle) -> ModelReference:
        key = (handle.name, handle.version_str)
        ref = self._models.get(key)
        if ref is None:
            ref = self._models[key] = ModelReference.from_handle(handle)
            self._export_reference(ref)
        return ref

    def process(self) -> None:
        """Bin every pending request into its model's counts."""
        pending, self._pending, self._pending_rows = self._pending, [], 0
        groups: dict[int, tuple[ModelHandle, list[Any]]] = {}
        for item in pending:
            groups.setdefault(id(item[0]), (item[0], []))[1].append(item)
        for handle, items in groups.values():
            sources = handle.feature_sources
            try:
                ref = self._reference(handle)
            except Exception:
                log.exception("drift: cannot read reference statistics of %s", handle.name)
                continue
            try:
                self._add(ref, items, sources)
            except Exception:
                # validation should make this unreachable; if not, lose only the odd requests
                for item in items:
                    try:
                        self._add(ref, [item], sources)
                    except Exception as exc:
                        log.warning("drift: request to %s skipped: %r", handle.name, exc)

    @staticmethod
    def _add(ref: ModelReference, items: list[Any], sources: Mapping[str, tuple[str, int]]) -> None:
        # every column is built before anything is counted, so that a request that fails
        # here (and is then retried on its own) has not been counted in part
        groups: dict[int, list[Any]] = {}
        for item in items:  # by the weight of their rows: 1, a sample's, or 0 (scores only)
            groups.setdefault(item[4], []).append(item)
        parts = [(DriftMonitor._columns(ref, g, sources), w) for w, g in groups.items() if w]
        probas = [p for _, _, p, _, _ in items if p is not None]
        proba = np.concatenate(probas, axis=0, dtype=np.float64) if probas else None
        for columns, weight in parts:
            ref.add(columns, None, weight)
        ref.add({}, proba)

    @staticmethod
    def _columns(
        ref: ModelReference, items: list[Any], sources: Mapping[str, tuple[str, int]]
    ) -> dict[str, np.ndarray | list[Any]]:
        """Each feature's values in the requests of ``items``, in one column."""
        # Most requests carry one row: reading the scalar out of each [1, 1] array is
        # several times cheaper than concatenating thousands of tiny arrays.
        ones = [f for _, f, _, rows, _ in items if rows == 1]
        many = [f for _, f, _, rows, _ in items if rows != 1]
        columns: dict[str, np.ndarray | list[Any]] = {}
        # packed inputs (``sources``: feature -> (input, column)): one [rows, k] matrix per
        # input for all the requests, then a column per feature
        matrices: dict[str, np.ndarray | None] = {}
        for source, index in sources.values():
            if index >= 0 and source not in matrices:
                try:
                    matrices[source] = np.concatenate([f[source] for _, f, _, _, _ in items])
                except KeyError:
                    matrices[source] = None
        for name, fb in ref.features.items():
            source, index = sources.get(name, (name, -1))
            if index >= 0:
                matrix = matrices.get(source)
                if matrix is not None:
                    column = matrix[:, index]
                    categorical = fb.kind == "categorical"
                    columns[name] = column.tolist() if categorical else column.astype(np.float64)
                continue
            get = itemgetter(name)
            try:
                scalars = list(map(np.ndarray.item, map(get, ones)))
                batch = np.concatenate(list(map(get, many)), axis=None) if many else None
            except KeyError:  # a model without this input: nothing to count
                continue
            if batch is None:
                columns[name] = scalars
            elif fb.kind == "categorical":
                columns[name] = scalars + batch.tolist()
            else:  # numbers stay in numpy
                columns[name] = np.concatenate((np.asarray(scalars, np.float64), batch), None)
        return columns

    def flush(self) -> None:
        """Bin pending requests and move the counts into the Prometheus counters."""
        self.process()
        for ref in self._models.values():
            counts, ref.counts = ref.counts, {}
            if self._metrics is not None:
                self._metrics.add(ref, counts)
            ref.rows = ref.positives = ref.sampled = 0
            ref.score_hist = np.zeros_like(ref.score_hist)
            ref.score_sum = 0.0

    async def run_flusher(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.flush()

    # -- Prometheus ------------------------------------------------------------
    @property
    def metrics(self) -> Any:
        if self._metrics is None and self._export:
            from server.monitoring.drift_metrics import DriftMetrics

            self._metrics = DriftMetrics()
        return self._metrics

    def _export_reference(self, ref: ModelReference) -> None:
        m = self.metrics
        if m is not None:
            m.declare(ref)
