"""Prometheus families for drift, written by worker processes (multiprocess mode).

Imported lazily by :class:`server.drift.DriftMonitor`, after the supervisor has pointed
prometheus-client at its multiprocess directory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from server.drift import SCORE_BOUNDS

if TYPE_CHECKING:
    from server.drift import ModelReference

__all__ = ["DriftMetrics"]


class DriftMetrics:
    """Counters per reference bucket, out-of-range and unseen values, score histogram."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.bucket = Counter(
            "pronto_drift_bucket",
            "Input values (and prediction scores, feature='__score__') per reference bucket.",
            ["model", "version", "feature", "bucket"],
            registry=None,
        )
        # livemax: every live worker holds the same share; a dead worker's file goes away
        self.reference = Gauge(
            "pronto_drift_reference_ratio",
            "Share of the training data in each reference bucket (from the model manifest).",
            ["model", "version", "feature", "bucket"],
            multiprocess_mode="livemax",
            registry=None,
        )
        self.unseen = Counter(
            "pronto_drift_unseen_categories",
            "Categorical values never seen in training.",
            ["model", "version", "feature"],
            registry=None,
        )
        self.out_of_range = Counter(
            "pronto_drift_out_of_range",
            "Numeric values outside the training range.",
            ["model", "version", "feature"],
            registry=None,
        )
        self.score = Histogram(
            "pronto_prediction_score",
            "Prediction score: positive-class probability (binary) or top probability.",
            ["model", "version"],
            buckets=SCORE_BOUNDS,
            registry=None,
        )
        self.sampled = Counter(
            "pronto_drift_sampled_rows",
            "Rows whose inputs were counted into the drift buckets, each once whatever it "
            "stands for there (large requests are sampled): the observations an input PSI "
            "rests on.",
            ["model", "version"],
            registry=None,
        )
        self.predictions = Counter(
            "pronto_predictions",
            "Rows scored (requests that returned probabilities).",
            ["model", "version"],
            registry=None,
        )
        self.positive = Counter(
            "pronto_predicted_positive",
            "Rows labelled with the positive class.",
            ["model", "version"],
            registry=None,
        )
        self.reference_positive = Gauge(
            "pronto_reference_positive_rate",
            "Share of test rows the model labelled positive at training time.",
            ["model", "version"],
            multiprocess_mode="livemax",
            registry=None,
        )

    def declare(self, ref: ModelReference) -> None:
        """Create every series of a model version with value 0 and set the reference shares."""
        m, v = ref.name, ref.version
        for fb in ref.buckets():
            for label, share in zip(fb.labels, fb.reference, strict=True):
                self.bucket.labels(m, v, fb.name, label)
                self.reference.labels(m, v, fb.name, label).set(share)
            if fb.kind == "categorical":
                self.unseen.labels(m, v, fb.name)
            elif fb.name in ref.features:
                self.out_of_range.labels(m, v, fb.name)
        self.score.labels(m, v)
        self.sampled.labels(m, v)
        self.predictions.labels(m, v)
        self.positive.labels(m, v)
        if ref.reference_positive_rate is not None:
            self.reference_positive.labels(m, v).set(ref.reference_positive_rate)

    def add(self, ref: ModelReference, counts: dict[str, np.ndarray]) -> None:
        """Add one flush interval's counts."""
        m, v = ref.name, ref.version
        buckets = {fb.name: fb for fb in ref.buckets()}
        for name, arr in counts.items():
            fb = buckets[name]
            for i in np.flatnonzero(arr).tolist():
                self.bucket.labels(m, v, name, fb.labels[i]).inc(int(arr[i]))
            if fb.name == ref.score_name:
                continue
            if fb.kind == "categorical":
                if arr[-1]:
                    self.unseen.labels(m, v, name).inc(int(arr[-1]))
            elif arr[0] or arr[-1]:
                self.out_of_range.labels(m, v, name).inc(int(arr[0] + arr[-1]))
        if ref.sampled:
            self.sampled.labels(m, v).inc(ref.sampled)
        if ref.rows:
            self.predictions.labels(m, v).inc(ref.rows)
            if ref.positive_index is not None:
                self.positive.labels(m, v).inc(ref.positives)
            self._add_scores(ref)

    def _add_scores(self, ref: ModelReference) -> None:
        child = self.score.labels(ref.name, ref.version)
        slots = getattr(child, "_buckets", None)
        total = getattr(child, "_sum", None)
        if slots is None or total is None or len(slots) != len(ref.score_hist):
            # prometheus-client internals changed: fall back to one observe per row
            for i, n in enumerate(ref.score_hist.tolist()):
                bound = SCORE_BOUNDS[i] if i < len(SCORE_BOUNDS) else 2.0
                for _ in range(n):
                    child.observe(bound)
            return
        # Histogram.observe per row would cost more than the binning itself; the
        # multiprocess histogram keeps one non-cumulative value per bucket plus the sum.
        for i, n in enumerate(ref.score_hist.tolist()):
            if n:
                slots[i].inc(n)
        total.inc(ref.score_sum)
