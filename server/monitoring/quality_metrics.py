"""Prometheus families of payload capture and label feedback, written by worker processes.

Imported lazily, after the supervisor has pointed prometheus-client at its multiprocess
directory (see :mod:`server.metrics`).
"""

from __future__ import annotations

__all__ = ["CaptureMetrics", "FeedbackMetrics"]


class CaptureMetrics:
    """Predictions indexed, payloads written, records dropped on a full buffer."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        self.indexed = Counter(
            "pronto_prediction_index_rows",
            "Prediction rows written to the prediction index (labels can join them).",
            registry=None,
        )
        self.captured = Counter(
            "pronto_capture_records",
            "Sampled predictions whose payload was written to a capture file.",
            registry=None,
        )
        self.dropped = Counter(
            "pronto_capture_dropped",
            "Predictions neither indexed nor captured because the capture buffer was full.",
            registry=None,
        )
        self.buffered = Gauge(
            "pronto_capture_buffered",
            "Predictions waiting in the capture buffers of live workers.",
            multiprocess_mode="livesum",
            registry=None,
        )

    def report(self, indexed: int, captured: int) -> None:
        if indexed:
            self.indexed.inc(indexed)
        if captured:
            self.captured.inc(captured)


class FeedbackMetrics:
    """Labels recorded per model version (errors are counted per status by the RPC wrapper)."""

    def __init__(self) -> None:
        from prometheus_client import Counter

        self.labels = Counter(
            "pronto_feedback_labels",
            "Ground-truth labels recorded for served prediction rows.",
            ["model"],
            registry=None,
        )
        self.unsampled = Counter(
            "pronto_feedback_unsampled",
            "Predictions whose labels arrived but which were outside the capture sample.",
            ["model"],
            registry=None,
        )
        self.rejected = Counter(
            "pronto_feedback_rejected",
            "Feedback requests refused, by reason (unknown_id, label_count, label_class, ...).",
            ["reason"],
            registry=None,
        )
        self.peer_calls = Counter(
            "pronto_feedback_peer_calls",
            "Calls to other pods for labels of predictions they served, by outcome "
            "(ok, unreachable).",
            ["outcome"],
            registry=None,
        )
