"""Crash and overload scenarios: kill -9 under REST and gRPC load, and 512 callers.

* **kill -9** (REST with wrk, gRPC with ghz, both through Envoy): a random worker gets
  SIGKILL every ``kill_interval_s``. Passes with no failed request, no socket error and
  a median time from a kill to the replacement answering SERVING on its port within
  ``serving_target_s``.
* **overload** (REST with wrk, gRPC with ghz): first ``baseline_connections`` closed-loop
  callers (the rate the stack serves), then ``overload_connections``. Passes when the
  p99 of all answers (successes and refusals) is within ``overload_p99_ms``, the goodput
  (successes per second) is at least ``goodput_ratio`` of the baseline rate, every
  failure is a refusal (429 / RESOURCE_EXHAUSTED) and the stack answers at once after.
  The p99 is judged twice: as the load generator timed the answers, and as Envoy did (its
  ``downstream_rq_time`` histogram, :mod:`loadtest.envoy_stats`), which leaves out the
  time an answer waits for a load generator that shares the machine's cores.
  Each phase also records the cores that Envoy, the server and the load generator used
  on average: where the CPU of a shared machine went when goodput fell.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loadtest import envoy_stats
from loadtest.chaos.faults import ChaosConfig, FaultResult, _result, _stack
from loadtest.chaos.probe import recovery_seconds
from loadtest.chaos.stack import Gateway, Instance
from loadtest.ghz import GhzRun, LoadResult, run_ghz
from loadtest.procstats import ProcessSampler
from loadtest.wrk import WrkRun, run_wrk

__all__ = ["kill_grpc", "kill_rest", "overload_grpc", "overload_rest"]

DATA = Path(__file__).resolve().parents[1] / "data"
MODEL = "flight-delay"
REST_PATH = f"/v1/models/{MODEL}:predict"
CALL = "inference.GRPCInferenceService.ModelInfer"


def _serving_after(address: str, limit: float = 10.0) -> float:
    """Seconds until ``address`` answers SERVING (new channel per try, no backoff)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        with grpc.insecure_channel(address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=0.25
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - start
            except grpc.RpcError:
                pass
        time.sleep(0.002)
    return float("inf")


def _worker_on(server: Instance, port: int) -> int:
    for pid in server.worker_pids():
        with contextlib.suppress(psutil.Error):
            for c in psutil.Process(pid).net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port:
                    return pid
    raise LookupError(f"no worker listens on {port}")


def _killer(server: Instance, cfg: ChaosConfig, seed: int = 0) -> Callable[[float], str]:
    """Kill a random worker every ``cfg.kill_interval_s``; detail with the SERVING times."""
    rng = random.Random(seed)

    def inject(t0: float) -> str:
        kills: list[float] = []
        while (len(kills) + 1) * cfg.kill_interval_s <= cfg.duration_s - 1:
            time.sleep(max(0.0, t0 + (len(kills) + 1) * cfg.kill_interval_s - time.monotonic()))
            port = server.base_port + rng.randrange(server.workers)
            try:
                victim = _worker_on(server, port)
            except LookupError:  # still coming back from the previous kill: wait for it
                _serving_after(f"127.0.0.1:{port}")
                victim = _worker_on(server, port)
            os.kill(victim, signal.SIGKILL)
            kills.append(_serving_after(f"127.0.0.1:{port}"))
        alive = server.proc is not None and server.proc.poll() is None
        if not kills:
            return "no kill: the run is shorter than the kill interval"
        median = statistics.median(kills)
        text = (
            f"{len(kills)} kills; back to SERVING after median {median * 1000:.0f} ms, "
            f"max {max(kills) * 1000:.0f} ms"
        )
        if median > cfg.serving_target_s:
            text += f"; failed: median over {cfg.serving_target_s * 1000:.0f} ms"
        if not alive:
            text += "; failed: supervisor died"
        return text

    return inject


def _concurrently(
    load: Callable[[], LoadResult], inject: Callable[[float], str]
) -> tuple[LoadResult, str]:
    detail: list[str] = []

    def injector() -> None:
        try:
            detail.append(inject(time.monotonic()))
        except Exception as exc:  # the table must show it, not a traceback in a thread
            detail.append(f"injector failed: {type(exc).__name__}: {exc}")

    thread = threading.Thread(target=injector, daemon=True)
    thread.start()
    result = load()
    thread.join(timeout=120)
    return result, detail[0] if detail else "injector still running after the load"


def _wrk(cfg: ChaosConfig, address: str, connections: int, duration: float) -> WrkRun:
    return WrkRun(
        url=f"http://{address}",
        path=REST_PATH,
        bodies_file=DATA / "rest_predict.jsonl",
        duration_s=duration,
        connections=connections,
        threads=2,
        statuses=True,
    )


def _ghz(
    address: str, concurrency: int, duration: float, rps: int | None, every_answer: bool = False
) -> GhzRun:
    """``every_answer``: latency percentiles of every answer, refusals too (ghz leaves
    non-OK answers out of them unless told)."""
    return GhzRun(
        address=address,
        call=CALL,
        data_file=DATA / "oip.json",
        concurrency=concurrency,
        connections=max(2, concurrency // 32),
        duration_s=duration,
        rps=rps,
        extra=["--count-errors"] if every_answer else [],
    )


def _crash_result(name: str, load: LoadResult, detail: str) -> FaultResult:
    result = _result(name, load, detail)
    if load.tool == "wrk" and load.errors:  # socket errors count as failures too
        result.verdict = "FAIL"
        result.failed = max(result.failed, load.errors)
    return result


def kill_rest(cfg: ChaosConfig) -> FaultResult:
    """SIGKILL a random worker every interval under closed-loop REST load (wrk)."""
    name = f"kill -9 every {cfg.kill_interval_s:g} s, REST ({cfg.rest_connections} conns)"
    with _stack(cfg, "kill-rest") as (servers, gateway):
        run = _wrk(cfg, gateway.address, cfg.rest_connections, cfg.duration_s)
        load, detail = _concurrently(
            lambda: run_wrk(run, cfg.out, "kill-rest"), _killer(servers[0], cfg, seed=1)
        )
    return _crash_result(name, load, detail)


def kill_grpc(cfg: ChaosConfig) -> FaultResult:
    """SIGKILL a random worker every interval under ghz load through Envoy."""
    name = f"kill -9 every {cfg.kill_interval_s:g} s, gRPC (ghz, {cfg.concurrency} calls)"
    with _stack(cfg, "kill-grpc") as (servers, gateway):
        run = _ghz(gateway.address, cfg.concurrency, cfg.duration_s, cfg.rps or None)
        load, detail = _concurrently(
            lambda: run_ghz(run, cfg.out, "kill-grpc"), _killer(servers[0], cfg, seed=2)
        )
    return _crash_result(name, load, detail)


@dataclass
class Phase:
    """One load of an overload fault: what the load generator saw, the cores each party
    used on average while it ran, and the request times Envoy itself recorded."""

    load: LoadResult
    cores: dict[str, float]
    at_envoy: envoy_stats.Histogram


def _measured(load: Callable[[], LoadResult], server: Instance, gateway: Gateway) -> Phase:
    """Run one load; with it, the cores that Envoy, the server and the load generator used
    on average, and Envoy's request times once its stats hold every answer of the load."""
    assert server.proc is not None and gateway.proc is not None
    before = envoy_stats.read(gateway.admin)
    with ProcessSampler([gateway.proc.pid]) as envoy, ProcessSampler([server.proc.pid]) as served:
        result = load()
    after = envoy_stats.settled(gateway.admin, before.count + result.count)
    seconds = result.duration_s or 1.0
    cores = {
        "Envoy": round(envoy.stats.cpu_seconds / seconds, 2),
        "server": round(served.stats.cpu_seconds / seconds, 2),
        result.tool: round(result.client_cpu_s / seconds, 2),
    }
    return Phase(result, cores, after - before)


def _cores_text(cores: dict[str, dict[str, float]]) -> str:
    """``cores at 16 -> 512 callers: Envoy 0.65 -> 1.10, ...``"""
    phases = list(cores)
    parties = cores[phases[0]]
    each = ", ".join(
        f"{party} " + " -> ".join(f"{cores[p][party]:.2f}" for p in phases) for party in parties
    )
    return f"cores at {' -> '.join(phases)} callers: {each}"


def _at_envoy(phase: Phase) -> tuple[float | None, str]:
    """Envoy's own p99 of a phase's answers, and how the detail column says it."""
    histogram, answers = phase.at_envoy, phase.load.count
    p99 = histogram.quantile(0.99)
    if p99 is None:
        return None, "Envoy recorded no request time"
    text = f"p99 at Envoy {p99:.0f} ms (p50 {histogram.quantile(0.5) or 0:.1f})"
    if histogram.count < answers:
        text += f" (Envoy had recorded {histogram.count} of the {answers} answers)"
    return p99, text


def _overload_verdict(
    name: str,
    cfg: ChaosConfig,
    base: Phase,
    over_phase: Phase,
    refused: int,
    after: float,
) -> FaultResult:
    over = over_phase.load
    cores = {
        str(cfg.baseline_connections): base.cores,
        str(cfg.overload_connections): over_phase.cores,
    }
    goodput = over.ok / over.duration_s if over.duration_s else 0.0
    ratio = goodput / base.load.rps if base.load.rps else 0.0
    p99 = over.latency_ms.get("p99", 0.0)
    at_envoy, envoy_text = _at_envoy(over_phase)
    other = over.count - over.ok - refused
    by_status = "".join(
        f", {status} p99 {p['p99']:.0f} ms (p50 {p['p50']:.1f})"
        for status, p in over.latency_by_status_ms.items()
    )
    detail = (
        f"baseline {base.load.rps:.0f}/s at {cfg.baseline_connections}; at "
        f"{cfg.overload_connections}: {refused} refused, goodput {goodput:.0f}/s "
        f"({ratio:.0%} of baseline), p99 {p99:.0f} ms (p50 {over.latency_ms.get('p50', 0):.1f})"
        f"{by_status}, {envoy_text}; a request succeeds {after:.2f} s after; "
        f"{_cores_text(cores)}"
    )
    failures = []
    if p99 > cfg.overload_p99_ms:
        failures.append(f"p99 over {cfg.overload_p99_ms:g} ms")
    if at_envoy is None or at_envoy > cfg.overload_p99_ms:
        failures.append(f"p99 at Envoy over {cfg.overload_p99_ms:g} ms")
    if ratio < cfg.goodput_ratio:
        failures.append(f"goodput under {cfg.goodput_ratio:.0%}")
    if other:
        failures.append(f"{other} failures other than refusals")
    if after > 5.0:
        failures.append("stack not healthy after")
    if failures:
        detail += "; failed: " + ", ".join(failures)
    return FaultResult(
        fault=name,
        sent=over.count,
        succeeded=over.ok,
        failed=over.count - over.ok,
        errors=over.error_kinds,
        verdict="FAIL" if failures or over.count == 0 else "pass",
        detail=detail,
        p99_ms=round(p99, 2),
        max_ms=round(over.latency_ms.get("max", 0.0), 2),
        zero_loss=False,
        cores=cores,
        gateway_p99_ms=None if at_envoy is None else round(at_envoy, 2),
    )


def overload_rest(cfg: ChaosConfig) -> FaultResult:
    """Closed-loop REST callers far past what the workers serve: refusals, not a queue."""
    name = f"overload, REST ({cfg.overload_connections} conns)"
    base_n, over_n = cfg.baseline_connections, cfg.overload_connections
    with _stack(cfg, "overload-rest") as (servers, gateway):
        seconds = cfg.overload_duration_s
        base_run = _wrk(cfg, gateway.address, base_n, seconds)
        over_run = _wrk(cfg, gateway.address, over_n, seconds)
        base = _measured(lambda: run_wrk(base_run, cfg.out, "base-rest"), servers[0], gateway)
        over = _measured(lambda: run_wrk(over_run, cfg.out, "overload-rest"), servers[0], gateway)
        after = recovery_seconds(gateway.address, limit=30.0)
    statuses = over.load.statuses
    refused = sum(n for status, n in statuses.items() if status in (429, 503))
    over.load.errors -= over.load.error_kinds.get("status_errors", 0)
    return _overload_verdict(name, cfg, base, over, refused, after)


def overload_grpc(cfg: ChaosConfig) -> FaultResult:
    """The same with ghz: RESOURCE_EXHAUSTED refusals, bounded latency, goodput kept."""
    name = f"overload, gRPC (ghz, {cfg.overload_connections} calls)"
    base_n, over_n = cfg.baseline_connections, cfg.overload_connections
    with _stack(cfg, "overload-grpc") as (servers, gateway):
        seconds = cfg.overload_duration_s
        base_run = _ghz(gateway.address, base_n, seconds, None, every_answer=True)
        over_run = _ghz(gateway.address, over_n, seconds, None, every_answer=True)
        base = _measured(lambda: run_ghz(base_run, cfg.out, "base-grpc"), servers[0], gateway)
        over = _measured(lambda: run_ghz(over_run, cfg.out, "overload-grpc"), servers[0], gateway)
        after = recovery_seconds(gateway.address, limit=30.0)
    refused = int(over.load.error_kinds.get("ResourceExhausted", 0))
    return _overload_verdict(name, cfg, base, over, refused, after)
