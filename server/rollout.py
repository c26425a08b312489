"""Rollouts inside a worker: canary routing, shadow scoring and their metrics.

:class:`RolloutRouter` keeps the parsed ``rollout.json`` of every served model (re-read on
each reload pass when the file changed) and answers two questions on the hot path:

- *canary*: does this unversioned request go to the candidate? A hash of the prediction id
  decides, so one id always gets the same version (and an id in the candidate at 5% stays
  there at 25%). A failed candidate answer is retried on stable: the caller never sees it.
- *shadow*: the stable answer goes back to the caller first; its inputs and outputs wait
  (by reference, nothing is copied) for a drain that runs a few milliseconds later, or as
  soon as enough samples wait, and scores everything queued since the last drain in one
  candidate run, compared with stable's answers array-wise. The queue is bounded (beyond
  it, samples are dropped and counted, never the request).

Requests that name a version are never rerouted. Without a rollout the per-request cost
is one dictionary lookup.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from server.errors import ProntoError
from server.model import ort_executor
from server.repository import Registry
from server.rollout_state import STATE_FILENAME, Mode, RolloutError, RolloutState

if TYPE_CHECKING:
    import grpc

    from server.core import PredictionSink
    from server.model import ModelHandle
    from server.settings import ServeSettings
    from server.status import Recorder

__all__ = ["BUCKETS", "RolloutRouter", "Route", "bucket_of", "combine_sinks", "observe_many"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: canary resolution: a weight is honoured to 0.01 percentage points
BUCKETS = 10_000
#: shadow samples waiting for the candidate, per worker; more are dropped
SHADOW_QUEUE = 256
#: a shadow drain runs this long after the first sample it will score...
SHADOW_DELAY = 0.02
#: ...or at once when this many samples wait. A drain costs about as much for one sample
#: as for dozens (one candidate run, caches cold after the requests in between), so under
#: load most of it is shared; 64 single-row samples hold the event loop well under 1 ms.
SHADOW_BATCH = 64
#: drains on the helper thread at once (one running, one waiting); more are dropped
SHADOW_OFFLOADED = 2


def bucket_of(salt: bytes, prediction_id: str) -> int:
    """Stable bucket in [0, BUCKETS) of a prediction id (same in every process and pod)."""
    digest = hashlib.blake2b(prediction_id.encode(), digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True, slots=True)
class Route:
    """What the hot path needs of one model's rollout state."""

    model: str
    stable: int
    candidate: int | None
    mode: Mode
    #: canary: ids whose bucket is below this go to the candidate
    cutoff: int
    #: shadow: probability that a request is also scored by the candidate
    sample: float
    salt: bytes

    @classmethod
    def of(cls, state: RolloutState) -> Route:
        # the salt is per model, not per candidate: an id keeps its side across a restart
        salt = hashlib.blake2b(state.model.encode(), digest_size=16).digest()
        return cls(
            state.model,
            state.stable,
            state.candidate if state.active else None,
            state.mode if state.active else Mode.OFF,
            round(state.weight * BUCKETS / 100) if state.mode is Mode.CANARY else 0,
            state.shadow_sample if state.mode is Mode.SHADOW else 0.0,
            salt,
        )


class _Pending:
    """Shadow samples of one candidate waiting for the next drain (references only)."""

    __slots__ = ("candidate", "feeds", "labels", "proba", "sizes", "translate")

    def __init__(self, candidate: ModelHandle, stable: ModelHandle) -> None:
        self.candidate = candidate
        #: stable and candidate lay their numeric features out differently (one packed
        #: ``[N, k]`` input, or one input per feature): feeds are kept by feature name
        #: and rebuilt in the candidate's layout when it runs
        self.translate = candidate.packed != stable.packed
        self.feeds: list[Mapping[str, np.ndarray]] = []
        self.labels: list[Any] = []
        self.proba: list[Any] = []
        self.sizes: list[int] = []


def _in_layout_of(
    candidate: ModelHandle, columns: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """A sample's features (one ``[N, 1]`` column each) as ``candidate``'s inputs: packed
    inputs stacked in their column order, the others by name, each in the input's dtype."""
    feeds: dict[str, np.ndarray] = {}
    for name, spec in candidate.inputs.items():
        packed = candidate.packed.get(name)
        if packed:
            missing = [c for c in packed if c not in columns]
            if missing:
                raise RolloutError(f"candidate needs features {missing}")
            array = np.hstack([columns[c] for c in packed])
        elif name in columns:
            array = columns[name]
        else:
            continue  # reported as a missing input by the caller
        dtype = spec.datatype.dtype
        feeds[name] = array if array.dtype == dtype else array.astype(dtype)
    return feeds


def _stack(parts: list[Any]) -> np.ndarray:
    return np.asarray(parts[0]) if len(parts) == 1 else np.concatenate(parts)


def _answered(parts: list[Any], sizes: list[int]) -> tuple[list[Any], np.ndarray | None]:
    """Stable's outputs that are present, and which rows of the drain they cover.

    A request may leave an output out (OIP ``outputs``); its rows are not compared.
    The row index is None when every sample has the output.
    """
    have = [i for i, part in enumerate(parts) if part is not None]
    if len(have) == len(parts):
        return parts, None
    starts = list(itertools.accumulate(sizes, initial=0))
    rows = [np.arange(starts[i], starts[i + 1]) for i in have]
    return [parts[i] for i in have], (np.concatenate(rows) if rows else np.empty(0, np.intp))


def observe_many(child: Any, values: np.ndarray, weights: np.ndarray | None = None) -> None:
    """``child.observe(v)`` for every value (``weights[i]`` times each), in one pass.

    prometheus-client has no call that observes a batch; per value, each ``observe`` costs
    an mmap write per bucket and sum in multiprocess mode. The bucket counts are computed
    here with numpy and added to the histogram's own counters: the same series as
    ``observe`` writes (``tests/server/test_rollout_state.py`` holds them equal).
    """
    if not len(values):
        return
    bounds = child._upper_bounds
    # first bound >= value, as observe does; NaN (never <= a bound) counts as +Inf
    index = np.minimum(np.searchsorted(bounds, values, side="left"), len(bounds) - 1)
    counts = np.bincount(index, weights=weights, minlength=len(bounds))
    for i, n in enumerate(counts.tolist()):
        if n:
            child._buckets[i].inc(n)
    total = values if weights is None else values * weights
    child._sum.inc(float(np.nansum(total)))


class _Stats:
    """Per-process rollout counters, flushed to Prometheus with the request counters."""

    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.errors: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        #: (seconds, how many requests it stands for): one per canary request, one per
        #: shadow drain (the run is the latency of each of its samples)
        self.latency: defaultdict[tuple[str, str, str], list[tuple[float, int]]] = defaultdict(list)
        self.compared: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.agreed: defaultdict[tuple[str, str], int] = defaultdict(int)
        #: per drain, the largest per-class probability difference of each compared row
        self.score_diff: defaultdict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
        self.dropped: defaultdict[tuple[str, str], int] = defaultdict(int)

    def add(self, other: _Stats) -> None:
        """Fold in counters gathered elsewhere (a shadow run on the helper thread)."""
        for mine, theirs in (
            (self.requests, other.requests),
            (self.errors, other.errors),
            (self.compared, other.compared),
            (self.agreed, other.agreed),
            (self.dropped, other.dropped),
        ):
            for key, n in theirs.items():
                mine[key] += n  # type: ignore[index]
        for key, runs in other.latency.items():
            self.latency[key].extend(runs)
        for pair, diffs in other.score_diff.items():
            self.score_diff[pair].extend(diffs)


class RolloutRouter:
    """One worker's view of the rollouts of the models it serves."""

    def __init__(self, root: Path, registry: Registry, metrics: Any | None = None) -> None:
        self.root = root
        self.registry = registry
        self.metrics = metrics
        #: model -> Route, replaced as a whole on refresh; only models with a state file
        self.routes: dict[str, Route] = {}
        self._stamps: dict[str, tuple[int, int, int]] = {}
        self._states: dict[str, RolloutState] = {}
        self._stats = _Stats()
        #: id(candidate handle) -> its samples waiting for the next drain
        self._pending: dict[int, _Pending] = {}
        self._queued = 0
        self._drain_handle: asyncio.Handle | None = None
        #: drains handed to the helper thread and not finished yet
        self._offloaded = 0
        self.shadow_delay = SHADOW_DELAY
        self.shadow_batch = SHADOW_BATCH
        self._random = random.random
        # shadow runs of big batches leave the event loop on the worker's one ONNX Runtime
        # thread (server.model.ort_executor), queued with offloaded requests
        self.offload_rows = 256
        self.admin_loopback_only = True

    @classmethod
    def for_worker(
        cls, settings: ServeSettings, registry: Registry, export_metrics: bool
    ) -> RolloutRouter:
        metrics = None
        if export_metrics:
            from server.monitoring.rollout_metrics import RolloutMetrics

            metrics = RolloutMetrics()
        router = cls(settings.model_repository, registry, metrics)
        router.offload_rows = settings.offload_rows
        router.admin_loopback_only = settings.rollout_admin_loopback_only
        return router

    def add_admin_to(
        self, server: grpc.aio.Server, recorder: Recorder, rescan: Callable[[], None], index: int
    ) -> None:
        """Serve ``pronto.v1.RolloutService`` on this worker's ports."""
        import os
        import socket

        from server.generated.pronto.v1 import rollout_pb2_grpc as rpb_grpc
        from server.rollout_admin import RolloutServicer
        from server.safe_decode import add_servicer

        actor = f"{socket.gethostname()}/worker-{index}/{os.getpid()}"
        add_servicer(
            rpb_grpc.add_RolloutServiceServicer_to_server,
            RolloutServicer(self.root, recorder, rescan, actor, self.admin_loopback_only),
            server,
        )

    # -- state ------------------------------------------------------------------
    def refresh(self, names: list[str]) -> dict[str, set[int]]:
        """Re-read changed state files of ``names``; returns the versions each pins.

        Runs on the reload helper thread; the routes are swapped in one assignment. A
        malformed file keeps the previous state (logged once per change of the file).
        """
        states = dict(self._states)
        for name in names:
            path = self.root / name / STATE_FILENAME
            try:
                st = path.stat()
            except FileNotFoundError:
                states.pop(name, None)
                self._stamps.pop(name, None)
                continue
            except OSError as exc:
                log.error("cannot read %s: %s", path, exc)
                continue
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._stamps.get(name) == stamp:
                continue
            self._stamps[name] = stamp
            try:
                state = RolloutState.model_validate_json(path.read_bytes())
            except (OSError, ValueError) as exc:
                log.error("%s is not a valid rollout state (%s); keeping the previous one",
                          path, exc)  # fmt: skip
                continue
            old = states.get(name)
            if old is None or old.generation != state.generation:
                log.info("%s: rollout %s (stable %d, candidate %s, weight %g%%)", name,
                         state.mode.value, state.stable, state.candidate, state.weight)  # fmt: skip
            states[name] = state
        self._states = states
        self.routes = {name: Route.of(s) for name, s in states.items()}
        self.registry.pin_defaults({name: s.stable for name, s in states.items()})
        return {
            name: {s.stable} | ({s.candidate} if s.candidate is not None else set())
            for name, s in states.items()
        }

    def state(self, name: str) -> RolloutState | None:
        return self._states.get(name)

    # -- canary -----------------------------------------------------------------
    def canary_for(self, stable: ModelHandle, prediction_id: str) -> ModelHandle | None:
        """The candidate handle when this request belongs to the canary, else None."""
        route = self.routes.get(stable.name)
        if route is None or route.cutoff == 0 or stable.version != route.stable:
            return None
        if route.cutoff < BUCKETS and bucket_of(route.salt, prediction_id) >= route.cutoff:
            return None
        assert route.candidate is not None
        # not loaded yet (or failed to load): its share stays on stable until it is
        return self.registry.find(stable.name, route.candidate)

    async def canary(
        self,
        call: Callable[..., Awaitable[T]],
        stable: ModelHandle,
        candidate: ModelHandle,
        *args: Any,
    ) -> T:
        """``call(candidate, *args)``; on failure ``call(stable, *args)`` answers instead."""
        key = (candidate.name, candidate.version_str, Mode.CANARY.value)
        self._stats.requests[key] += 1
        start = time.perf_counter()
        try:
            result = await call(candidate, *args)
        except Exception as exc:
            # a caller error fails on stable too and propagates from here: the candidate is
            # blamed only when stable could answer the same request
            result = await call(stable, *args)
            self._record_error(key, exc)
            return result
        self._stats.latency[key].append((time.perf_counter() - start, 1))
        return result

    def _record_error(
        self, key: tuple[str, str, str], exc: Exception, count: int = 1, stats: _Stats | None = None
    ) -> None:
        reason = exc.reason if isinstance(exc, ProntoError) else type(exc).__name__
        (stats or self._stats).errors[(*key, reason)] += count
        log.debug("candidate %s version %s failed: %s", key[0], key[1], exc)

    # -- shadow (a PredictionSink) -------------------------------------------------
    def record(
        self,
        prediction_id: str,
        handle: ModelHandle,
        feeds: Mapping[str, np.ndarray],
        labels: Any,
        proba: Any,
        rows: int,
    ) -> None:
        route = self.routes.get(handle.name)
        if route is None or route.sample == 0.0 or handle.version != route.stable:
            return
        if route.sample < 1.0 and self._random() >= route.sample:
            return
        candidate = self.registry.find(handle.name, route.candidate or 0)
        if candidate is None:
            return
        if self._queued >= SHADOW_QUEUE:
            self._stats.dropped[(handle.name, candidate.version_str)] += 1
            return
        pending = self._pending.get(id(candidate))
        if pending is None:
            pending = self._pending[id(candidate)] = _Pending(candidate, handle)
        # the request's own arrays: neither it nor the sinks change them after the answer
        pending.feeds.append(handle.feature_columns(feeds) if pending.translate else feeds)
        pending.labels.append(labels)
        pending.proba.append(proba)
        pending.sizes.append(rows)
        self._queued += 1
        if self._drain_handle is None:
            # later than the answers on their way, late enough to share the run with others
            loop = asyncio.get_running_loop()
            self._drain_handle = loop.call_later(self.shadow_delay, self._drain)
        elif self._queued == self.shadow_batch:
            self._drain_handle.cancel()
            self._drain_handle = asyncio.get_running_loop().call_soon(self._drain)

    @property
    def shadow_pending(self) -> int:
        """Shadow samples waiting for the next drain."""
        return self._queued

    def _drain(self) -> None:
        self._drain_handle = None
        pending, self._pending = self._pending, {}
        self._queued = 0
        loop = asyncio.get_running_loop()
        for batch in pending.values():
            if batch.candidate.runs_inline(sum(batch.sizes), self.offload_rows):
                self._shadow(batch, self._stats)
            elif self._offloaded >= SHADOW_OFFLOADED:
                # the helper thread is behind (a slow candidate): drop, never pile up
                key = (batch.candidate.name, batch.candidate.version_str)
                self._stats.dropped[key] += len(batch.feeds)
            else:
                # counters of its own, folded in on the event loop: a flush never sees a
                # half-written one, and none is written after the flush that took it
                self._offloaded += 1
                stats = _Stats()
                done = loop.run_in_executor(ort_executor(), self._shadow, batch, stats)
                done.add_done_callback(functools.partial(self._fold, stats))

    def _fold(self, stats: _Stats, _: object) -> None:
        self._offloaded -= 1
        self._stats.add(stats)

    def _shadow(self, batch: _Pending, stats: _Stats) -> None:
        """One candidate run for every sample of ``batch``; compare with stable's answers."""
        candidate = batch.candidate
        key = (candidate.name, candidate.version_str, Mode.SHADOW.value)
        count = len(batch.feeds)
        stats.requests[key] += count
        names = [n for n in (candidate.label_output, candidate.proba_output) if n]
        start = time.perf_counter()
        try:
            samples = batch.feeds
            if batch.translate:
                samples = [_in_layout_of(candidate, f) for f in samples]
            first = samples[0]
            missing = [n for n in candidate.inputs if n not in first]
            if missing:
                raise RolloutError(f"candidate needs inputs {missing}")
            if count == 1:
                feeds = {n: first[n] for n in candidate.inputs}
            else:
                feeds = {n: np.concatenate([f[n] for f in samples]) for n in candidate.inputs}
            results = candidate.run(feeds, names)
        except Exception as exc:
            self._record_error(key, exc, count, stats)
            return
        stats.latency[key].append((time.perf_counter() - start, count))
        pair = (candidate.name, candidate.version_str)
        rows = sum(batch.sizes)
        try:
            if candidate.label_output is not None:
                parts, index = _answered(batch.labels, batch.sizes)
                if parts:
                    mine = np.asarray(results[0]).reshape(rows, -1)[:, 0]
                    if index is not None:
                        mine = mine[index]
                    theirs = _stack(parts).reshape(len(mine), -1)[:, 0]
                    if mine.dtype != theirs.dtype:
                        mine, theirs = mine.astype(str), theirs.astype(str)
                    stats.compared[pair] += len(mine)
                    stats.agreed[pair] += int(np.count_nonzero(mine == theirs))
            if candidate.proba_output is not None:
                parts, index = _answered(batch.proba, batch.sizes)
                if parts:
                    p_mine = np.asarray(results[-1], dtype=np.float64).reshape(rows, -1)
                    if index is not None:
                        p_mine = p_mine[index]
                    p_theirs = _stack(parts).astype(np.float64, copy=False)
                    p_theirs = p_theirs.reshape(len(p_mine), -1)
                    if p_mine.shape == p_theirs.shape:
                        # the largest per-class difference of each row
                        stats.score_diff[pair].append(np.abs(p_mine - p_theirs).max(axis=1))
        except Exception:  # a comparison bug must never reach a request
            log.exception("shadow comparison failed for %s", candidate.name)

    # -- metrics ----------------------------------------------------------------
    def flush(self) -> None:
        stats, self._stats = self._stats, _Stats()
        m = self.metrics
        if m is None:
            return
        for key, n in stats.requests.items():
            m.requests.labels(*key).inc(n)
        for ekey, n in stats.errors.items():
            m.errors.labels(*ekey).inc(n)
        for key, runs in stats.latency.items():
            seconds, weights = np.array(runs, dtype=np.float64).T
            observe_many(m.latency.labels(*key), seconds, weights)
        for pair, n in stats.compared.items():
            m.compared.labels(*pair).inc(n)
        for pair, n in stats.agreed.items():
            m.agreed.labels(*pair).inc(n)
        for pair, diffs in stats.score_diff.items():
            observe_many(m.score_difference.labels(*pair), np.concatenate(diffs))
        for pair, n in stats.dropped.items():
            m.shadow_dropped.labels(*pair).inc(n)

    async def run_flusher(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.flush()
            except Exception:
                log.exception("rollout metrics flush failed")

    def close(self) -> None:
        if self._drain_handle is not None:
            self._drain_handle.cancel()
            self._drain_handle = None
        # the ONNX Runtime thread is the worker's, closed with its inference core


class _Sinks:
    __slots__ = ("sinks",)

    def __init__(self, sinks: tuple[PredictionSink, ...]) -> None:
        self.sinks = sinks

    def record(self, *args: Any) -> None:
        for sink in self.sinks:
            sink.record(*args)


def combine_sinks(*sinks: PredictionSink | None) -> PredictionSink | None:
    """One prediction sink that hands every prediction to each of ``sinks``."""
    present = tuple(s for s in sinks if s is not None)
    if not present:
        return None
    return present[0] if len(present) == 1 else _Sinks(present)
