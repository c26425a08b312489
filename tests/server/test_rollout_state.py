"""Rollout state files, canary assignment and the analysis rules, in process."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from server.core import InferenceCore
from server.errors import InvalidInput
from server.model import load_model
from server.repository import Registry
from server.rollout import (
    BUCKETS,
    SHADOW_OFFLOADED,
    SHADOW_QUEUE,
    RolloutRouter,
    bucket_of,
    observe_many,
)
from server.rollout_analysis import Analyst, Totals, judge, p99_bound
from server.rollout_state import (
    Lease,
    Mode,
    RolloutError,
    RolloutState,
    Thresholds,
    abort,
    promote,
    read_state,
    start,
    state_path,
    update_state,
)
from tests.server.oip_requests import infer_request, rows


@pytest.fixture
def repo(model_repo: Path, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(model_repo / "flights", root / "flights")
    return root


def test_start_promote_abort_round_trip(repo: Path) -> None:
    state = start(repo, "flights", 2, Mode.CANARY, weight=10, actor="t")
    assert (state.stable, state.candidate, state.mode, state.weight) == (1, 2, Mode.CANARY, 10)
    on_disk = read_state(repo, "flights")
    assert on_disk == state and on_disk.generation == 1
    # no temporary files left behind by the atomic write
    assert (
        sorted(p.name for p in (repo / "flights").iterdir() if p.name.startswith(".rollout-")) == []
    )
    promoted = promote(repo, "flights", "good", "t")
    assert (promoted.stable, promoted.candidate, promoted.mode) == (2, None, Mode.OFF)
    assert [d.action for d in promoted.history] == ["start", "promote"]
    # the new stable stays the default; a rollout back to version 1 is a rollout too
    again = start(repo, "flights", 1, Mode.SHADOW)
    assert (again.stable, again.candidate, again.weight) == (2, 1, 0.0)
    aborted = abort(repo, "flights", "bad")
    assert (aborted.stable, aborted.candidate) == (2, None)
    assert aborted.generation == 4
    # aborting nothing is not an error, and writes nothing
    assert abort(repo, "flights").generation == 4


def test_invalid_operations_are_refused(repo: Path) -> None:
    with pytest.raises(RolloutError, match="already stable"):
        start(repo, "flights", 1, Mode.CANARY, stable=1)
    with pytest.raises(RolloutError, match="weight"):
        start(repo, "flights", 2, Mode.CANARY, weight=150)
    with pytest.raises(RolloutError, match="unknown model"):
        start(repo, "nope", 2, Mode.CANARY)
    with pytest.raises(RolloutError, match="no rollout"):
        promote(repo, "flights")
    state_path(repo, "flights").write_text('{"model": "flights", "stable": "x"}')
    with pytest.raises(RolloutError, match="stable"):
        read_state(repo, "flights")


def test_concurrent_writers_never_lose_an_update(repo: Path) -> None:
    start(repo, "flights", 2, Mode.CANARY, weight=0)

    def bump() -> None:
        for _ in range(20):

            def change(s: RolloutState | None) -> RolloutState | None:
                assert s is not None
                new = s.model_copy(deep=True)
                new.weight = s.weight + 1
                return new

            update_state(repo, "flights", change)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = read_state(repo, "flights")
    assert final is not None and final.weight == 80 and final.generation == 81
    json.loads(state_path(repo, "flights").read_text())  # always a whole document


def test_bucket_is_uniform_and_stable() -> None:
    salt = b"s" * 16
    buckets = [bucket_of(salt, f"id-{i}") for i in range(20_000)]
    assert buckets[:50] == [bucket_of(salt, f"id-{i}") for i in range(50)]
    below = sum(b < BUCKETS // 4 for b in buckets) / len(buckets)
    assert abs(below - 0.25) < 0.015


def _router(repo: Path) -> tuple[Registry, RolloutRouter]:
    registry = Registry()
    registry.replace(load_model("flights", v, repo / "flights" / str(v)) for v in (1, 2))
    router = RolloutRouter(repo, registry)
    return registry, router


def test_canary_share_stickiness_and_default_pin(repo: Path) -> None:
    registry, router = _router(repo)
    start(repo, "flights", 2, Mode.CANARY, weight=30)
    assert router.refresh(["flights"]) == {"flights": {1, 2}}
    stable = registry.get("flights")
    assert stable.version == 1  # pinned to stable although version 2 is newer
    chosen = [router.canary_for(stable, f"p-{i}") for i in range(10_000)]
    share = sum(c is not None for c in chosen) / len(chosen)
    assert abs(share - 0.30) < 0.03
    assert all(c is None or c.version == 2 for c in chosen)
    again = [router.canary_for(stable, f"p-{i}") for i in range(10_000)]
    assert [c is None for c in again] == [c is None for c in chosen]
    # a larger weight keeps every id that already was in the canary
    start(repo, "flights", 2, Mode.CANARY, weight=60)
    router.refresh(["flights"])
    wider = [router.canary_for(stable, f"p-{i}") for i in range(10_000)]
    assert all(w is not None for c, w in zip(chosen, wider, strict=True) if c is not None)
    promote(repo, "flights")
    router.refresh(["flights"])
    assert registry.get("flights").version == 2
    assert router.canary_for(registry.get("flights"), "p-1") is None


def test_failed_candidate_answer_is_retried_on_stable(repo: Path) -> None:
    registry, router = _router(repo)
    start(repo, "flights", 2, Mode.CANARY, weight=100)
    router.refresh(["flights"])
    core = InferenceCore(registry)
    core.ready = True
    core.router = router
    calls: list[int] = []

    async def flaky(handle, request, prediction_id):  # type: ignore[no-untyped-def]
        calls.append(handle.version)
        if handle.version == 2:
            raise RuntimeError("candidate broke")
        return await InferenceCore._infer(core, handle, request, prediction_id)

    core._infer = flaky  # type: ignore[method-assign]
    from server.oip_codec import decode_infer_request

    request = decode_infer_request(infer_request(rows(2)), 10**6, 10**6)
    response = asyncio.run(core.infer(request))
    assert response.model_version == "1" and calls == [2, 1]
    assert sum(router._stats.errors.values()) == 1
    # a caller error fails on stable too: it reaches the caller, the candidate is not blamed
    bad = decode_infer_request(infer_request({"OPERA": ["x"]}), 10**6, 10**6)
    core._infer = lambda h, r, p: InferenceCore._infer(core, h, r, p)  # type: ignore[method-assign]
    with pytest.raises(InvalidInput):
        asyncio.run(core.infer(bad))
    assert sum(router._stats.errors.values()) == 1
    # explicit versions are never rerouted
    pinned = decode_infer_request(infer_request(rows(1), version="1"), 10**6, 10**6)
    assert asyncio.run(core.infer(pinned)).model_version == "1"


def _shadow_core(repo: Path) -> tuple[Registry, RolloutRouter, InferenceCore]:
    registry, router = _router(repo)
    start(repo, "flights", 2, Mode.SHADOW)
    router.refresh(["flights"])
    core = InferenceCore(registry, sink=router)
    core.ready = True
    core.router = router
    return registry, router, core


async def _drained(router: RolloutRouter) -> None:
    """Until the router's pending shadow samples have been scored (its drain is a timer)."""
    while router.shadow_pending:
        await asyncio.sleep(router.shadow_delay / 2)


class _CountingSession:
    """An ONNX Runtime session that records the rows of each run."""

    def __init__(self, session: object) -> None:
        self.session = session
        self.runs: list[int] = []

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> object:
        self.runs.append(len(next(iter(feeds.values()))))
        return self.session.run(outputs, feeds)  # type: ignore[attr-defined]


def _counting_runs(registry: Registry, version: int) -> list[int]:
    """Rows of each run of ``version`` (the candidate), recorded as they happen."""
    handle = registry.find("flights", version)
    assert handle is not None
    counting = _CountingSession(handle.session)
    handle.session = counting  # type: ignore[assignment]
    return counting.runs


def test_shadow_compares_labels_and_scores(repo: Path) -> None:
    registry, router, core = _shadow_core(repo)
    runs = _counting_runs(registry, 2)
    # the drain's timer is out of the way: the twentieth sample fills the batch and
    # schedules it, however slowly the requests run
    router.shadow_delay, router.shadow_batch = 3600.0, 20
    from server.oip_codec import decode_infer_request

    async def go() -> list[str]:
        versions = []
        for i in range(20):
            req = infer_request(rows(3))
            resp = await core.infer(decode_infer_request(req, 10**6, 10**6))
            versions.append(resp.model_version)
            if i % 5 == 0:
                await asyncio.sleep(0)
        # nothing is scored inside the requests: the drain comes after the answers
        assert runs == [] and router.shadow_pending == 20
        await asyncio.sleep(0)
        assert router.shadow_pending == 0
        return versions

    assert set(asyncio.run(go())) == {"1"}
    # one candidate run for the 20 requests queued since the last drain
    assert runs == [60]
    stats = router._stats
    assert stats.requests[("flights", "2", "shadow")] == 20
    assert stats.compared[("flights", "2")] == 60
    assert 0 <= stats.agreed[("flights", "2")] <= 60
    # the run stands for the latency of each of its 20 samples
    assert [w for _, w in stats.latency[("flights", "2", "shadow")]] == [20]
    diffs = np.concatenate(stats.score_diff[("flights", "2")])
    assert len(diffs) == 60 and diffs.max() > 0  # versions 1 and 2 differ (C=0.05 vs 1.0)


@pytest.mark.parametrize("offload", [False, True], ids=["inline", "helper-thread"])
def test_shadow_agreement_matches_row_by_row_comparison(repo: Path, offload: bool) -> None:
    """Batched scoring gives what scoring each request alone gives, on the event loop or
    on the helper thread; requests that left an output out are not compared on it."""
    registry, router, core = _shadow_core(repo)
    stable, candidate = registry.find("flights", 1), registry.find("flights", 2)
    assert stable is not None and candidate is not None
    if offload:
        router.offload_rows = 1
        candidate.inline_rows = 0
    from server.oip_codec import decode_infer_request

    requests = [infer_request(rows(n)) for n in (1, 3, 2, 5)]
    only_label = infer_request(rows(4))
    only_label.outputs.add(name="label")
    requests.append(only_label)

    async def go() -> None:
        for req in requests:
            await core.infer(decode_infer_request(req, 10**6, 10**6))
        await _drained(router)
        # a run on the helper thread is folded into the counters when it completes
        deadline = time.monotonic() + 30
        while not router._stats.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.001)

    asyncio.run(go())
    assert router._stats.requests[("flights", "2", "shadow")] == len(requests)
    agreed = 0
    diffs = []
    for req in requests:
        feeds = core._feeds(stable, decode_infer_request(req, 10**6, 10**6))
        s_label, s_proba = stable.run(feeds, ["label", "probabilities"])
        c_label, c_proba = candidate.run(feeds, ["label", "probabilities"])
        agreed += int(np.count_nonzero(s_label == c_label))
        if not req.outputs:
            diffs.append(np.abs(s_proba.astype(float) - c_proba.astype(float)).max(axis=1))
    stats = router._stats
    assert stats.compared[("flights", "2")] == 15
    assert stats.agreed[("flights", "2")] == agreed
    np.testing.assert_allclose(
        np.concatenate(stats.score_diff[("flights", "2")]), np.concatenate(diffs), rtol=1e-6
    )


def test_shadow_batch_drains_without_waiting_and_queue_is_bounded(repo: Path) -> None:
    registry, router, _ = _shadow_core(repo)
    runs = _counting_runs(registry, 2)
    router.shadow_delay = 3600.0  # only a full batch can drain
    router.shadow_batch = 8
    stable = registry.get("flights")
    feeds = stable.sample_feeds(1)
    label, proba = stable.run(feeds, ["label", "probabilities"])

    async def go() -> None:
        for _ in range(8):
            router.record("id", stable, feeds, label, proba, 1)
        await asyncio.sleep(0)
        assert runs == [8] and router.shadow_pending == 0
        # a full queue drops samples (counted), never blocks the caller
        for _ in range(SHADOW_QUEUE + 5):
            router.record("id", stable, feeds, label, proba, 1)
        assert router.shadow_pending == SHADOW_QUEUE
        router.close()  # cancels the pending drain

    asyncio.run(go())
    assert router._stats.dropped[("flights", "2")] == 5


def test_shadow_drains_behind_on_the_helper_thread_are_dropped(repo: Path) -> None:
    """A candidate slower than the traffic never piles drains up behind the helper thread."""
    registry, router, _ = _shadow_core(repo)
    router.offload_rows = 1
    candidate = registry.find("flights", 2)
    assert candidate is not None
    candidate.inline_rows = 0  # past offload_rows, every drain goes to the helper thread
    release = threading.Event()
    counting = _CountingSession(candidate.session)
    run = counting.run

    def slow(outputs: list[str], feeds: dict[str, np.ndarray]) -> object:
        release.wait(30)
        return run(outputs, feeds)

    counting.run = slow  # type: ignore[method-assign]
    candidate.session = counting  # type: ignore[assignment]
    stable = registry.get("flights")
    feeds = stable.sample_feeds(1)
    label, proba = stable.run(feeds, ["label", "probabilities"])

    async def go() -> None:
        for drain in range(SHADOW_OFFLOADED + 2):
            for _ in range(drain + 1):
                router.record("id", stable, feeds, label, proba, 1)
            await _drained(router)
        release.set()
        deadline = time.monotonic() + 30
        while router._offloaded and time.monotonic() < deadline:
            await asyncio.sleep(0.001)

    asyncio.run(go())
    # drains of 1 and 2 samples ran; those of 3 and 4 found the helper thread behind
    assert counting.runs == [1, 2]
    assert router._stats.requests[("flights", "2", "shadow")] == 3
    assert router._stats.dropped[("flights", "2")] == 3 + 4
    router.close()


def test_observe_many_writes_what_observe_writes() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    registry = CollectorRegistry()
    bounds = (0.001, 0.01, 0.1, 1.0)
    one = Histogram("one", "per value", ["k"], buckets=bounds, registry=registry)
    many = Histogram("many", "batched", ["k"], buckets=bounds, registry=registry)
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.exponential(0.05, 200), bounds, [0.0, 5.0, np.nan]])
    weights = rng.integers(1, 4, len(values)).astype(float)
    for v, w in zip(values.tolist(), weights.tolist(), strict=True):
        for _ in range(int(w)):
            one.labels("a").observe(v if v == v else float("inf"))  # NaN counts as +Inf
    observe_many(many.labels("a"), values, weights)
    observe_many(many.labels("a"), np.empty(0))

    def series(name: str) -> dict[tuple[str, str], float]:
        return {
            (s.name.removeprefix(name), s.labels.get("le", "")): s.value
            for family in registry.collect()
            if family.name == name
            for s in family.samples
            if not s.name.endswith("_created")
        }

    got, want = series("many"), series("one")
    assert got.keys() == want.keys()
    for key, value in want.items():
        if key[0] == "_sum":  # +Inf stands in for NaN above: compare the finite part
            value = float(np.sum(values[~np.isnan(values)] * weights[~np.isnan(values)]))
        assert got[key] == pytest.approx(value), key


def test_judge_thresholds() -> None:
    state = RolloutState(
        model="m", stable=1, candidate=2, mode=Mode.CANARY, weight=5,
        thresholds=Thresholds(min_requests=10, max_error_rate=0.1, min_agreement=0.8,
                              max_latency_p99_seconds=0.01),
    )  # fmt: skip
    fast = {0.001: 100.0, 0.01: 100.0, float("inf"): 100.0}
    assert judge(Totals(5, 5), state).breach == ""  # too few requests to judge
    assert "error rate" in judge(Totals(100, 20, buckets=fast), state).breach
    assert judge(Totals(100, 5, buckets=fast), state).breach == ""
    slow = {0.001: 50.0, 0.01: 90.0, 0.1: 100.0, float("inf"): 100.0}
    assert "p99" in judge(Totals(100, 0, buckets=slow), state).breach
    assert "agreement" in judge(Totals(100, 0, 100, 70, fast), state).breach
    assert "accuracy" in judge(Totals(100, 0, buckets=fast), state, quality_drop=0.2).breach
    assert p99_bound(slow) == 0.1


class _Family:
    def __init__(self, name: str, samples: list[tuple[str, dict[str, str], float]]) -> None:
        from types import SimpleNamespace

        self.name = name
        self.samples = [SimpleNamespace(name=n, labels=lab, value=v) for n, lab, v in samples]


def _candidate_families(requests: float, errors: float = 0.0) -> list[_Family]:
    lab = {"model": "flights", "version": "2", "mode": "canary"}
    return [
        _Family("pronto_rollout_candidate_requests", [
            ("pronto_rollout_candidate_requests_total", lab, requests)]),
        _Family("pronto_rollout_candidate_errors", [
            ("pronto_rollout_candidate_errors_total", {**lab, "reason": "x"}, errors)]),
        _Family("pronto_rollout_candidate_latency_seconds", [
            ("pronto_rollout_candidate_latency_seconds_bucket", {**lab, "le": "0.01"}, requests),
            ("pronto_rollout_candidate_latency_seconds_bucket", {**lab, "le": "+Inf"}, requests)]),
    ]  # fmt: skip


class _Quality:
    def __init__(self, stable: float, candidate: float) -> None:
        self.values = {"1": stable, "2": candidate}

    def collect(self) -> list[_Family]:
        est = {"model": "flights", "source": "estimated"}
        return [
            _Family("pronto_model_quality", [
                ("pronto_model_quality", {**est, "version": v, "metric": "accuracy"}, a)
                for v, a in self.values.items()]),
            _Family("pronto_model_quality_rows", [
                ("pronto_model_quality_rows", {**est, "version": v}, 500.0) for v in self.values]),
        ]  # fmt: skip


def _analyst(repo: Path, totals: list[float], quality: list[_Quality] | None = None) -> Analyst:
    analyst = Analyst(repo, ["flights"], repo, owner="me", quality=quality or [])
    analyst._families = lambda: _candidate_families(*totals)  # type: ignore[method-assign]
    return analyst


def test_analysis_steps_promotes_and_respects_the_lease(repo: Path) -> None:
    start(repo, "flights", 2, Mode.CANARY, auto=True, step_seconds=10,
          thresholds=Thresholds(min_requests=10))  # fmt: skip
    totals = [0.0, 0.0]
    analyst = _analyst(repo, totals)
    now = 1000.0
    weights = []
    for _ in range(30):
        analyst.tick(now)  # a window opens, then a step after 10 s and 10 requests
        totals[0] += 50
        now += 6
        state = read_state(repo, "flights")
        assert state is not None
        weights.append(state.weight if state.candidate else "promoted")
        if state.candidate is None:
            break
    assert weights[-1] == "promoted"
    assert sorted({w for w in weights if w != "promoted"}) == [5.0, 25.0, 50.0, 100.0]
    # each step lasted at least step_seconds
    assert weights.count(5.0) >= 2
    final = read_state(repo, "flights")
    assert final is not None and final.stable == 2 and final.lease.owner == ""
    # another supervisor holding a live lease: this one decides nothing
    start(repo, "flights", 1, Mode.CANARY, auto=True, step_seconds=1)

    def held(s: RolloutState | None) -> RolloutState | None:
        assert s is not None
        new = s.model_copy(deep=True)
        new.lease = Lease(owner="other", until=time.time() + 60)
        return new

    update_state(repo, "flights", held)
    other = _analyst(repo, [10_000.0, 10_000.0])
    other.tick(time.time())
    other.tick(time.time() + 5)
    state = read_state(repo, "flights")
    assert state is not None and state.candidate == 1 and state.lease.owner == "other"


def test_analysis_aborts_on_estimated_quality_drop(repo: Path) -> None:
    start(repo, "flights", 2, Mode.CANARY, auto=True, step_seconds=600,
          thresholds=Thresholds(min_requests=10, max_quality_drop=0.05))  # fmt: skip
    totals = [0.0, 0.0]
    analyst = _analyst(repo, totals, [_Quality(stable=0.85, candidate=0.70)])
    analyst.tick(100.0)
    totals[0] = 100.0
    analyst.tick(101.0)
    state = read_state(repo, "flights")
    assert state is not None and state.candidate is None and state.stable == 1
    assert state.history[-1].action == "abort" and "accuracy" in state.history[-1].reason


def test_admin_service_answers_only_local_callers(repo: Path) -> None:
    import grpc

    from server.generated.pronto.v1 import rollout_pb2 as rpb
    from server.metrics import RequestRecorder
    from server.rollout_admin import RolloutServicer, is_loopback

    assert is_loopback("ipv4:127.0.0.1:5000") and is_loopback("ipv6:[::1]:5000")
    assert is_loopback("unix:/tmp/s") and is_loopback("ipv6:[::ffff:127.0.0.1]:1")
    assert not is_loopback("ipv4:10.1.2.3:5000") and not is_loopback("ipv6:[fe80::1]:5000")

    class Aborted(Exception):
        pass

    class Context:
        def __init__(self, peer: str) -> None:
            self._peer = peer
            self.code: grpc.StatusCode | None = None

        def peer(self) -> str:
            return self._peer

        async def abort(self, code: grpc.StatusCode, message: str) -> None:
            self.code = code
            raise Aborted(message)

    rescans: list[int] = []
    servicer = RolloutServicer(repo, RequestRecorder(), lambda: rescans.append(1), "t")
    request = rpb.StartRolloutRequest(name="flights", candidate=2, mode="canary", weight=10)
    remote = Context("ipv4:10.1.2.3:5000")
    with pytest.raises(Aborted):
        asyncio.run(servicer.StartRollout(request, remote))
    assert remote.code == grpc.StatusCode.PERMISSION_DENIED
    assert read_state(repo, "flights") is None and rescans == []
    reply = asyncio.run(servicer.StartRollout(request, Context("ipv4:127.0.0.1:5000")))
    assert reply.rollout.weight == 10 and rescans == [1]
