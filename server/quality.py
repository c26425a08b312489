"""Live model quality: realized from labels, estimated from predicted probabilities.

For every binary classifier in the prediction index (:mod:`server.labels`) the supervisor's
``/metrics`` endpoint exports ``pronto_model_quality{model, version, metric, source}``:

- ``source="labels"``: accuracy, precision, recall, F1 and ROC AUC of the newest labeled
  rows (at most ``window_rows``, labeled within ``window_seconds``), the same numbers
  scikit-learn's ``accuracy_score``, ``precision_score``, ``recall_score``, ``f1_score``
  (``zero_division=0``) and ``roc_auc_score`` give on those rows;
- ``source="estimated"``: the same metrics expected from the scores alone, over the newest
  served rows. If the model is calibrated, a row with positive-class probability *p* is a
  positive with weight *p* and a negative with weight *1-p*; the metrics are
  scikit-learn's with those sample weights (the expected confusion matrix). This moves
  before labels arrive: a shift of the score distribution shows at once.

Quality is computed in one place from the shared index, so every scrape sees the same value
whichever worker served or labeled the rows. Pure Python: the supervisor must not import
numpy.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.labels import INDEX_FILENAME, LabelStore

__all__ = [
    "METRICS",
    "QualityCollector",
    "binary_metrics",
    "estimated_metrics",
    "roc_auc",
    "supervisor_collectors",
]

if TYPE_CHECKING:
    from server.settings import ServeSettings

log = logging.getLogger(__name__)

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")


def roc_auc(scored: Iterable[tuple[float, float, float]]) -> float | None:
    """Area under the ROC curve of ``(score, positive weight, negative weight)`` triples.

    Ties count one half, as in scikit-learn; None when either class has no weight.
    """
    groups: dict[float, list[float]] = {}
    for score, pos, neg in scored:
        g = groups.get(score)
        if g is None:
            groups[score] = [pos, neg]
        else:
            g[0] += pos
            g[1] += neg
    area = neg_below = total_pos = 0.0
    for score in sorted(groups):
        pos, neg = groups[score]
        area += pos * (neg_below + 0.5 * neg)
        neg_below += neg
        total_pos += pos
    if total_pos <= 0 or neg_below <= 0:
        return None
    return area / (total_pos * neg_below)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0  # scikit-learn's zero_division=0


def _from_counts(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def binary_metrics(
    rows: Sequence[tuple[str, float | None, str]], positive: str
) -> dict[str, float]:
    """Realized metrics of ``(predicted, score, label)`` rows."""
    tp = fp = fn = tn = 0
    for predicted, _, label in rows:
        if predicted == positive:
            if label == positive:
                tp += 1
            else:
                fp += 1
        elif label == positive:
            fn += 1
        else:
            tn += 1
    out = _from_counts(tp, fp, fn, tn)
    if all(s is not None for _, s, _ in rows):
        auc = roc_auc(
            (s, 1.0 if label == positive else 0.0, 0.0 if label == positive else 1.0)
            for _, s, label in rows
            if s is not None
        )
        if auc is not None:
            out["roc_auc"] = auc
    return out


def estimated_metrics(rows: Sequence[tuple[str, float | None]], positive: str) -> dict[str, float]:
    """Expected metrics of ``(predicted, score)`` rows if the scores are calibrated."""
    tp = fp = fn = tn = 0.0
    scored = []
    for predicted, p in rows:
        if p is None or math.isnan(p):
            continue
        if predicted == positive:
            tp += p
            fp += 1.0 - p
        else:
            fn += p
            tn += 1.0 - p
        scored.append((p, p, 1.0 - p))
    if not scored:
        return {}
    out = _from_counts(tp, fp, fn, tn)
    auc = roc_auc(scored)
    if auc is not None:
        out["roc_auc"] = auc
    return out


class QualityCollector:
    """A prometheus-client collector over the prediction index; results cached briefly."""

    def __init__(
        self,
        directory: Path,
        *,
        window_rows: int = 10_000,
        window_seconds: float = 86_400.0,
        retention_seconds: float = 7 * 86_400.0,
        refresh_seconds: float = 10.0,
    ) -> None:
        self.directory = directory
        self.window_rows = window_rows
        self.window_seconds = window_seconds
        self.retention_seconds = retention_seconds
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._computed = -math.inf
        self._pruned = -math.inf
        self._families: list[Any] = []

    def compute(self, now: float | None = None) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        now = time.time() if now is None else now
        quality = GaugeMetricFamily(
            "pronto_model_quality",
            "Live quality of a binary classifier: realized from labels (source=labels) or "
            "expected from calibrated scores (source=estimated).",
            labels=["model", "version", "metric", "source"],
        )
        rows = GaugeMetricFamily(
            "pronto_model_quality_rows",
            "Rows in the window behind pronto_model_quality.",
            labels=["model", "version", "source"],
        )
        reference = GaugeMetricFamily(
            "pronto_model_quality_reference",
            "Quality on the training-time test split (from the model manifest).",
            labels=["model", "version", "metric"],
        )
        if not (self.directory / INDEX_FILENAME).exists():
            return [quality, rows, reference]
        store = LabelStore(self.directory)
        try:
            if now - self._pruned >= 60.0:
                store.prune(now - self.retention_seconds)
                self._pruned = now
            since = now - self.window_seconds
            for info in store.models():
                if info.positive is None:
                    continue
                key = [info.model, info.version]
                for metric, value in info.reference.items():
                    reference.add_metric([*key, metric], value)
                labeled = store.labeled(info.model, info.version, since, self.window_rows)
                served = store.served(info.model, info.version, since, self.window_rows)
                rows.add_metric([*key, "labels"], len(labeled))
                rows.add_metric([*key, "estimated"], len(served))
                for source, values in (
                    ("labels", binary_metrics(labeled, info.positive) if labeled else {}),
                    ("estimated", estimated_metrics(served, info.positive)),
                ):
                    for metric, value in values.items():
                        quality.add_metric([*key, metric, source], value)
        finally:
            store.close()
        return [quality, rows, reference]

    def collect(self) -> Iterator[Any]:
        with self._lock:
            now = time.monotonic()
            if now - self._computed >= self.refresh_seconds:
                try:
                    self._families = self.compute()
                except Exception:
                    log.exception("quality: cannot read the prediction index")
                self._computed = now
            families = self._families
        yield from families


def supervisor_collectors(settings: ServeSettings) -> list[QualityCollector]:
    """Create the prediction index (once, before workers start) and its quality collector."""
    directory = settings.capture_dir
    if directory is None:
        return []
    store = LabelStore(directory)
    try:
        store.create()
    finally:
        store.close()
    return [
        QualityCollector(
            directory,
            window_rows=settings.quality_window_rows,
            window_seconds=settings.quality_window_seconds,
            retention_seconds=settings.label_retention,
            refresh_seconds=settings.quality_refresh_seconds,
        )
    ]
