"""Prometheus families of model rollouts (``pronto_rollout_*``).

Workers write the candidate's requests, errors, latency and its agreement with stable;
the supervisor writes the state gauges and the decisions of the automatic analysis.
Imported lazily, after the supervisor has pointed prometheus-client at its multiprocess
directory (see :mod:`server.metrics`).
"""

from __future__ import annotations

from server.metrics import LATENCY_BUCKETS

__all__ = ["SCORE_DIFF_BUCKETS", "AnalysisMetrics", "RolloutMetrics"]

#: |p_candidate - p_stable| per row
SCORE_DIFF_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


class RolloutMetrics:
    """Written by workers."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.requests = Counter(
            "pronto_rollout_candidate_requests",
            "Requests the candidate answered (canary) or scored (shadow).",
            ["model", "version", "mode"],
            registry=None,
        )
        self.errors = Counter(
            "pronto_rollout_candidate_errors",
            "Candidate failures (a canary request is then answered by stable), by reason.",
            ["model", "version", "mode", "reason"],
            registry=None,
        )
        self.latency = Histogram(
            "pronto_rollout_candidate_latency_seconds",
            "Candidate latency: the whole request (canary) or the model run (shadow).",
            ["model", "version", "mode"],
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.compared = Counter(
            "pronto_rollout_compared_rows",
            "Rows scored by both stable and the candidate (shadow).",
            ["model", "version"],
            registry=None,
        )
        self.agreed = Counter(
            "pronto_rollout_agreed_rows",
            "Compared rows where the candidate's label equals stable's.",
            ["model", "version"],
            registry=None,
        )
        self.score_difference = Histogram(
            "pronto_rollout_score_difference",
            "Largest per-class probability difference between candidate and stable, per row.",
            ["model", "version"],
            buckets=SCORE_DIFF_BUCKETS,
            registry=None,
        )
        self.shadow_dropped = Counter(
            "pronto_rollout_shadow_dropped",
            "Shadow samples dropped because the worker's shadow queue was full.",
            ["model", "version"],
            registry=None,
        )


class AnalysisMetrics:
    """Written by the supervisor that holds the analysis lease."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        self.decisions = Counter(
            "pronto_rollout_decisions",
            "Decisions of the automatic analysis (step, promote, abort), by reason.",
            ["model", "decision", "reason"],
            registry=None,
        )
        self.weight = Gauge(
            "pronto_rollout_weight",
            "Percent of unversioned requests routed to the candidate (canary).",
            ["model"],
            multiprocess_mode="mostrecent",
            registry=None,
        )
        self.mode = Gauge(
            "pronto_rollout_mode",
            "1 for the model's current rollout mode (off, shadow, canary), 0 for the others.",
            ["model", "mode"],
            multiprocess_mode="mostrecent",
            registry=None,
        )
        self.agreement = Gauge(
            "pronto_rollout_agreement_rate",
            "Label agreement of candidate and stable over the current analysis window.",
            ["model", "version"],
            multiprocess_mode="mostrecent",
            registry=None,
        )
        self.error_rate = Gauge(
            "pronto_rollout_error_rate",
            "Candidate error rate over the current analysis window.",
            ["model", "version"],
            multiprocess_mode="mostrecent",
            registry=None,
        )
        self.latency_p99 = Gauge(
            "pronto_rollout_latency_p99_seconds",
            "Candidate 99th latency percentile (bucket bound) over the analysis window.",
            ["model", "version"],
            multiprocess_mode="mostrecent",
            registry=None,
        )
