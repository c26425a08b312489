"""Automatic rollout analysis: step the canary weight, promote, or abort on a breach.

Runs in the supervisor (one per server), on a timer. Exactly one actor decides for a
model: the supervisor that holds the lease recorded in its ``rollout.json``
(``lease.owner`` / ``lease.until``, taken and renewed under the state file's lock); the
others only watch. A supervisor that dies stops renewing, and another takes over once the
lease has expired.

Each window starts when the analysis sees a new step. Over the window it reads the
candidate's totals from the merged worker metrics (``pronto_rollout_*``) and, where the
quality loop runs, the estimated accuracy of candidate and stable:

- a breach (error rate, 99th latency percentile, label agreement or estimated quality past
  its threshold, judged once the window holds ``min_requests`` candidate requests) aborts
  the rollout at once;
- a window that lasted ``step_seconds`` with ``min_requests`` and no breach moves to the
  next step: shadow → canary at the first step → … → 100% → promote.

Every decision is logged, counted (``pronto_rollout_decisions_total``) and recorded in the
state file's history. Pure Python: the supervisor imports neither numpy nor onnxruntime.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.rollout_state import (
    STATE_FILENAME,
    Lease,
    Mode,
    RolloutError,
    RolloutState,
    abort,
    promote,
    read_state,
    update_state,
)

if TYPE_CHECKING:
    from server.monitoring.rollout_metrics import AnalysisMetrics
    from server.settings import ServeSettings

__all__ = ["Analyst", "Totals", "Verdict", "judge", "p99_bound"]

log = logging.getLogger(__name__)


@dataclass
class Totals:
    """Cumulative candidate counters of one model version, summed over workers."""

    requests: float = 0.0
    errors: float = 0.0
    compared: float = 0.0
    agreed: float = 0.0
    #: latency histogram: upper bound -> cumulative count
    buckets: dict[float, float] = field(default_factory=dict)

    def __sub__(self, other: Totals) -> Totals:
        return Totals(
            self.requests - other.requests,
            self.errors - other.errors,
            self.compared - other.compared,
            self.agreed - other.agreed,
            {le: n - other.buckets.get(le, 0.0) for le, n in self.buckets.items()},
        )


@dataclass
class Verdict:
    breach: str = ""
    error_rate: float | None = None
    p99: float | None = None
    agreement: float | None = None
    quality_drop: float | None = None


def p99_bound(buckets: dict[float, float]) -> float | None:
    """Upper bound of the bucket holding the 99th percentile (cumulative buckets)."""
    if not buckets:
        return None
    ordered = sorted(buckets.items())
    total = ordered[-1][1]
    if total <= 0:
        return None
    for le, n in ordered:
        if n >= 0.99 * total:
            return le
    return math.inf


def judge(window: Totals, state: RolloutState, quality_drop: float | None = None) -> Verdict:
    """Compare one window of candidate totals with the state's thresholds."""
    t = state.thresholds
    verdict = Verdict(quality_drop=quality_drop)
    if window.requests > 0:
        verdict.error_rate = window.errors / window.requests
        verdict.p99 = p99_bound(window.buckets)
    if window.compared > 0:
        verdict.agreement = window.agreed / window.compared
    if window.requests < t.min_requests:
        return verdict
    if verdict.error_rate is not None and verdict.error_rate > t.max_error_rate:
        verdict.breach = f"error rate {verdict.error_rate:.3f} > {t.max_error_rate:g}"
    elif verdict.p99 is not None and verdict.p99 > t.max_latency_p99_seconds:
        verdict.breach = f"p99 latency {verdict.p99:g}s > {t.max_latency_p99_seconds:g}s"
    elif (
        verdict.agreement is not None
        and window.compared >= t.min_requests
        and verdict.agreement < t.min_agreement
    ):
        verdict.breach = f"label agreement {verdict.agreement:.3f} < {t.min_agreement:g}"
    elif quality_drop is not None and quality_drop > t.max_quality_drop:
        verdict.breach = f"estimated accuracy {quality_drop:.3f} below stable"
    return verdict


def read_totals(families: Iterable[Any], model: str, version: str) -> Totals:
    """Candidate totals from merged prometheus-client metric families."""
    totals = Totals()
    for family in families:
        if not family.name.startswith("pronto_rollout_"):
            continue
        for s in family.samples:
            if s.labels.get("model") != model or s.labels.get("version") != version:
                continue
            name = s.name
            if name == "pronto_rollout_candidate_requests_total":
                totals.requests += s.value
            elif name == "pronto_rollout_candidate_errors_total":
                totals.errors += s.value
            elif name == "pronto_rollout_compared_rows_total":
                totals.compared += s.value
            elif name == "pronto_rollout_agreed_rows_total":
                totals.agreed += s.value
            elif name == "pronto_rollout_candidate_latency_seconds_bucket":
                le = float(s.labels["le"])
                totals.buckets[le] = totals.buckets.get(le, 0.0) + s.value
    return totals


@dataclass
class _Window:
    key: tuple[Any, ...]
    started: float
    baseline: Totals


class Analyst:
    """The automatic analysis of one supervisor."""

    def __init__(
        self,
        root: Path,
        names: Sequence[str] | None,
        metrics_dir: Path,
        *,
        interval: float = 1.0,
        quality: Sequence[Any] = (),
        metrics: AnalysisMetrics | None = None,
        owner: str | None = None,
    ) -> None:
        self.root = root
        self.names = list(names) if names else None
        self.metrics_dir = metrics_dir
        self.interval = interval
        self.quality = list(quality)
        self.metrics = metrics
        self.owner = owner or f"{socket.gethostname()}/{os.getpid()}"
        self.lease_seconds = max(10.0, 5 * interval)
        self._windows: dict[str, _Window] = {}
        self._next = 0.0

    @classmethod
    def for_supervisor(
        cls, settings: ServeSettings, metrics_dir: Path, quality: Sequence[Any]
    ) -> Analyst:
        from server.monitoring.rollout_metrics import AnalysisMetrics

        return cls(
            settings.model_repository,
            settings.models,
            metrics_dir,
            interval=settings.rollout_analysis_interval,
            quality=quality,
            metrics=AnalysisMetrics(),
        )

    def maybe_tick(self, now: float) -> None:
        """Called from the supervisor's loop (monotonic ``now``)."""
        if now < self._next:
            return
        self._next = now + self.interval
        try:
            self.tick()
        except Exception:  # the analysis must never take the supervisor down
            log.exception("rollout analysis failed")

    def _models(self) -> list[str]:
        if self.names is not None:
            return self.names
        try:
            return sorted(
                p.name
                for p in self.root.iterdir()
                if not p.name.startswith(".") and (p / STATE_FILENAME).is_file()
            )
        except OSError:
            return []

    def _families(self) -> list[Any]:
        from prometheus_client.multiprocess import MultiProcessCollector

        return list(MultiProcessCollector(None, path=str(self.metrics_dir)).collect())

    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        families: list[Any] | None = None
        for model in self._models():
            try:
                state = read_state(self.root, model)
            except RolloutError as exc:
                log.error("%s", exc)
                continue
            self._gauges(model, state)
            if state is None or not state.active or not state.auto:
                self._windows.pop(model, None)
                continue
            if not self._hold_lease(model, state, now):
                self._windows.pop(model, None)
                continue
            if families is None:
                families = self._families()
            self._analyse(model, state, families, now)

    # -- lease --------------------------------------------------------------------
    def _hold_lease(self, model: str, state: RolloutState, now: float) -> bool:
        lease = state.lease
        if lease.owner == self.owner and lease.until - now > self.lease_seconds / 2:
            return True
        if lease.owner not in ("", self.owner) and lease.until > now:
            return False

        def take(current: RolloutState | None) -> RolloutState | None:
            if current is None or not current.active or not current.auto:
                return current
            held = current.lease
            if held.owner not in ("", self.owner) and held.until > now:
                return current
            new = current.model_copy(deep=True)
            new.lease = Lease(owner=self.owner, until=now + self.lease_seconds)
            return new

        try:
            after = update_state(self.root, model, take)
        except (OSError, RolloutError) as exc:
            log.error("%s: cannot take the analysis lease: %s", model, exc)
            return False
        if after is None or after.lease.owner != self.owner:
            return False
        if lease.owner != self.owner:
            log.info("%s: this supervisor (%s) runs the rollout analysis", model, self.owner)
        state.lease = after.lease
        return True

    # -- analysis -----------------------------------------------------------------
    def _quality_drop(self, model: str, state: RolloutState) -> float | None:
        """Estimated accuracy of stable minus candidate, where the quality loop has both."""
        if not self.quality or state.mode is not Mode.CANARY:
            return None
        accuracy: dict[str, tuple[float, float]] = {}
        rows: dict[str, float] = {}
        for collector in self.quality:
            for family in collector.collect():
                for s in family.samples:
                    if s.labels.get("model") != model or s.labels.get("source") != "estimated":
                        continue
                    version = s.labels.get("version", "")
                    if family.name == "pronto_model_quality_rows":
                        rows[version] = s.value
                    elif s.labels.get("metric") == "accuracy":
                        accuracy[version] = (s.value, 0.0)
        stable, candidate = str(state.stable), str(state.candidate)
        need = state.thresholds.min_requests
        if stable not in accuracy or candidate not in accuracy:
            return None
        if rows.get(stable, 0) < need or rows.get(candidate, 0) < need:
            return None
        return accuracy[stable][0] - accuracy[candidate][0]

    def _analyse(self, model: str, state: RolloutState, families: list[Any], now: float) -> None:
        assert state.candidate is not None
        version = str(state.candidate)
        totals = read_totals(families, model, version)
        key = (state.started_at, state.candidate, state.mode, state.weight)
        window = self._windows.get(model)
        if window is None or window.key != key:
            window = self._windows[model] = _Window(key, now, totals)
            log.info("%s: analysing version %s (%s, weight %g%%)",
                     model, version, state.mode.value, state.weight)  # fmt: skip
            return
        delta = totals - window.baseline
        verdict = judge(delta, state, self._quality_drop(model, state))
        self._window_gauges(model, version, verdict)
        if verdict.breach:
            self._decide(model, "abort", verdict.breach, state)
            return
        if (
            now - window.started < state.step_seconds
            or delta.requests < state.thresholds.min_requests
        ):
            return
        reason = f"{delta.requests:.0f} requests, error rate {verdict.error_rate or 0:.3f}" + (
            f", agreement {verdict.agreement:.3f}" if verdict.agreement is not None else ""
        )
        if state.mode is Mode.SHADOW:
            self._step(model, state, Mode.CANARY, state.steps[0], reason)
        else:
            higher = [s for s in state.steps if s > state.weight]
            if higher:
                self._step(model, state, Mode.CANARY, higher[0], reason)
            else:
                self._decide(model, "promote", reason, state)

    def _step(self, model: str, state: RolloutState, mode: Mode, weight: float, why: str) -> None:
        candidate, before = state.candidate, (state.mode, state.weight)

        def change(current: RolloutState | None) -> RolloutState | None:
            if current is None or current.candidate != candidate:
                return current
            if (current.mode, current.weight) != before or current.lease.owner != self.owner:
                return current  # changed by someone else meanwhile
            new = current.model_copy(deep=True)
            new.mode, new.weight = mode, weight
            new.step_started_at = time.time()
            new.decide("step", why, self.owner)
            return new

        after = update_state(self.root, model, change)
        if after is not None and after.weight == weight and after.mode is mode:
            log.info("%s: rollout of version %s steps to %s %g%% (%s)",
                     model, candidate, mode.value, weight, why)  # fmt: skip
            self._count(model, "step", "healthy")

    def _decide(self, model: str, action: str, why: str, state: RolloutState) -> None:
        finish = promote if action == "promote" else abort
        after = finish(self.root, model, why, self.owner, expect=state.candidate)
        if after.candidate is None:
            level = logging.WARNING if action == "abort" else logging.INFO
            log.log(level, "%s: rollout of version %s: %s (%s)", model, state.candidate,
                    action, why)  # fmt: skip
            self._count(model, action, why.split(" ")[0] if action == "abort" else "healthy")
            self._windows.pop(model, None)

    # -- metrics ------------------------------------------------------------------
    def _count(self, model: str, decision: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.decisions.labels(model, decision, reason).inc()

    def _gauges(self, model: str, state: RolloutState | None) -> None:
        m = self.metrics
        if m is None:
            return
        m.weight.labels(model).set(state.weight if state is not None and state.active else 0.0)
        for mode in Mode:
            active = state is not None and state.mode is mode
            m.mode.labels(model, mode.value).set(1.0 if active else 0.0)

    def _window_gauges(self, model: str, version: str, verdict: Verdict) -> None:
        m = self.metrics
        if m is None:
            return
        if verdict.agreement is not None:
            m.agreement.labels(model, version).set(verdict.agreement)
        if verdict.error_rate is not None:
            m.error_rate.labels(model, version).set(verdict.error_rate)
        if verdict.p99 is not None and math.isfinite(verdict.p99):
            m.latency_p99.labels(model, version).set(verdict.p99)
