"""The faults: each starts its own stack, runs ghz through Envoy, injects, and reports.

Every fault returns a :class:`FaultResult` with the client's view (requests sent,
succeeded, failed, from ghz's ``statusCodeDistribution``) and what the injector saw.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest.chaos.probe import infer_once, recovery_seconds, timed_call
from loadtest.chaos.reload import (
    POLL_FIELD,
    publish_version,
    wait_version_ready,
)
from loadtest.chaos.slowmodel import SLOW_MODEL, build_slow_model, slow_request
from loadtest.chaos.stack import Gateway, Instance, port_block
from loadtest.ghz import GhzRun, LoadResult, run_ghz
from pronto_contract import version_dir

__all__ = ["ChaosConfig", "FaultResult", "hot_reload", "rolling_restart", "slow"]

DATA = Path(__file__).resolve().parents[1] / "data" / "oip.json"
CALL = "inference.GRPCInferenceService.ModelInfer"


@dataclass
class ChaosConfig:
    repository: Path
    out: Path
    duration_s: float = 20.0
    kill_interval_s: float = 2.0
    workers: int = 2
    concurrency: int = 8
    rps: int = 200
    deadline_s: float = 0.2
    slow_delay_s: float = 0.5
    recovery_limit_s: float = 10.0
    #: kill -9: closed-loop REST connections, and the median time to SERVING to beat
    rest_connections: int = 16
    serving_target_s: float = 0.3
    #: overload: the rate measured at the baseline, then far more callers
    baseline_connections: int = 16
    overload_connections: int = 512
    overload_duration_s: float = 20.0
    overload_p99_ms: float = 100.0
    goodput_ratio: float = 0.85


@dataclass
class FaultResult:
    fault: str
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    #: "pass", "FAIL" or "not run"
    verdict: str = "pass"
    detail: str = ""
    p99_ms: float = 0.0
    max_ms: float = 0.0
    #: failures count against the fault (false for the slow model: deadlines are expected)
    zero_loss: bool = True
    #: overload faults: cores used on average by each party, per phase (callers -> party)
    cores: dict[str, dict[str, float]] = field(default_factory=dict)
    #: overload faults: p99 of the answers' times as Envoy recorded them (ms)
    gateway_p99_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load(cfg: ChaosConfig, address: str, **overrides: Any) -> GhzRun:
    kwargs: dict[str, Any] = {
        "address": address,
        "call": CALL,
        "data_file": DATA,
        "concurrency": cfg.concurrency,
        "connections": 2,
        "duration_s": cfg.duration_s,
        "rps": cfg.rps,
    }
    kwargs.update(overrides)
    return GhzRun(**kwargs)


def _under_load(
    run: GhzRun, cfg: ChaosConfig, name: str, inject: Callable[[float], str]
) -> tuple[LoadResult, str]:
    """Run ghz; meanwhile ``inject(t0)`` (in a thread) applies the fault, returns a detail."""
    detail: list[str] = []

    def injector() -> None:
        try:
            detail.append(inject(time.monotonic()))
        except Exception as exc:  # the table must show it, not a traceback in a thread
            detail.append(f"injector failed: {type(exc).__name__}: {exc}")

    thread = threading.Thread(target=injector, daemon=True)
    thread.start()
    result = run_ghz(run, cfg.out, name)
    thread.join(timeout=120)
    return result, detail[0] if detail else "injector still running after the load"


def _result(name: str, load: LoadResult, detail: str, zero_loss: bool = True) -> FaultResult:
    failed = load.count - load.ok
    ok = (failed == 0 or not zero_loss) and "failed" not in detail
    return FaultResult(
        fault=name,
        sent=load.count,
        succeeded=load.ok,
        failed=failed,
        errors=load.error_kinds,
        verdict="pass" if ok and load.count > 0 else "FAIL",
        detail=detail,
        p99_ms=round(load.latency_ms.get("p99", 0.0), 2),
        max_ms=round(load.latency_ms.get("max", 0.0), 2),
        zero_loss=zero_loss,
    )


@contextlib.contextmanager
def _stack(
    cfg: ChaosConfig,
    name: str,
    instances: int = 1,
    repository: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Iterator[tuple[list[Instance], Gateway]]:
    base = port_block(instances * cfg.workers)
    logs = cfg.out / "logs"
    servers = [
        Instance(
            repository or cfg.repository,
            cfg.workers,
            base + i * cfg.workers,
            logs / f"{name}-server{i}.log",
            extra={"drain_delay": 2.0, "grace_period": 10.0, **(extra or {})},
        )
        for i in range(instances)
    ]
    gateway = Gateway(base, instances * cfg.workers, logs / f"{name}-envoy.log")
    try:
        for s in servers:
            s.start()
        gateway.start()
        yield servers, gateway
    finally:
        gateway.stop()
        for s in servers:
            s.stop()


def rolling_restart(cfg: ChaosConfig) -> FaultResult:
    """Two instances behind one Envoy: drain (SIGTERM) and restart one, then the other."""
    name = "rolling restart"
    with _stack(cfg, "rolling", instances=2) as (servers, gateway):

        def inject(t0: float) -> str:
            steps = []
            time.sleep(min(2.0, cfg.duration_s / 10))
            total = len(servers) * cfg.workers
            for i, server in enumerate(servers):
                rc, took = server.drain()
                # Envoy must have taken the old workers out of rotation, or "healthy" below
                # could be its stale view of the processes that just exited
                out = took + gateway.wait_unhealthy(total)
                server.start()
                seen = gateway.wait_healthy(total)
                steps.append(
                    f"#{i} drained in {took:.1f} s (exit {rc}), out of Envoy's rotation "
                    f"<= {out:.1f} s after SIGTERM"
                )
                if rc != 0:
                    steps.append("drain failed")
                steps[-1] += f", back behind Envoy {seen:.1f} s after its workers were ready"
            left = cfg.duration_s - (time.monotonic() - t0)
            if left < 0:
                steps.append(f"restarts outlasted the load by {-left:.1f} s")
            return "; ".join(steps)

        load, detail = _under_load(_load(cfg, gateway.address), cfg, "rolling", inject)
    return _result(name, load, detail)


def hot_reload(cfg: ChaosConfig) -> FaultResult:
    """Publish new versions under load: one found by polling, one announced by SIGHUP."""
    name = "hot reload (2 new versions)"
    repo = cfg.out / "logs" / "reload-repo"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(cfg.repository, repo)
    with _stack(cfg, "reload", repository=repo, extra={POLL_FIELD: 1.0}) as (servers, gateway):
        server = servers[0]
        workers = [f"127.0.0.1:{server.base_port + i}" for i in range(server.workers)]

        def inject(t0: float) -> str:
            steps = []
            for step, supervisor in ((1, None), (2, server.pid)):
                time.sleep(max(0.0, t0 + step * cfg.duration_s / 3 - time.monotonic()))
                version = publish_version(repo, supervisor)
                took = wait_version_ready(workers, version, timeout=cfg.duration_s)
                how = "SIGHUP" if supervisor else "polling"
                steps.append(f"v{version} ({how}) served by every worker after {took:.1f} s")
            return "; ".join(steps)

        load, detail = _under_load(_load(cfg, gateway.address), cfg, "reload", inject)
        served = infer_once(gateway.address).model_version
        if load.count and served != "3":
            detail += f"; failed: answers come from version {served}"
    return _result(name, load, detail)


def _deadline_probe(address: str, data: Path, cfg: ChaosConfig, t0: float, until: float) -> str:
    """While ghz runs, time single calls with the same deadline: how long clients wait."""
    waits: list[float] = []
    codes: dict[str, int] = {}
    while time.monotonic() - t0 < until:
        waited, code = timed_call(address, data, cfg.deadline_s)
        waits.append(waited)
        codes[code] = codes.get(code, 0) + 1
        time.sleep(0.1)
    late = max(waits) - cfg.deadline_s if waits else float("inf")
    text = f"probe calls {codes}, longest wait {max(waits, default=0) * 1000:.0f} ms"
    # a hang would show as seconds; a loaded 2-core machine adds tenths to any call
    if late > 1.0 or set(codes) - {"DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}:
        text += "; failed: deadline not honoured promptly"
    return text


def slow(cfg: ChaosConfig) -> FaultResult:
    """A slow model under clients with deadlines: prompt DEADLINE_EXCEEDED, then recovery."""
    name = f"slow model ({cfg.slow_delay_s:g} s) vs {cfg.deadline_s:g} s deadline"
    repo = cfg.out / "logs" / "slow-repo"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(cfg.repository, repo)
    per_run = build_slow_model(version_dir(repo, SLOW_MODEL, 1), cfg.slow_delay_s)
    data = slow_request(cfg.out / "logs" / "slow-request.json")
    duration = min(cfg.duration_s, 15.0)
    with _stack(cfg, "slow", repository=repo) as (servers, gateway):
        run = _load(
            cfg, gateway.address, data_file=data, timeout_s=cfg.deadline_s,
            duration_s=duration, rps=None, concurrency=4,
        )  # fmt: skip
        load, probe = _under_load(
            run, cfg, "slow", lambda t0: _deadline_probe(gateway.address, data, cfg, t0, duration)
        )
        recovery = recovery_seconds(gateway.address, limit=60.0)
        alive = all(s.proc is not None and s.proc.poll() is None for s in servers)
    # ghz lists status names and, separately, error messages (which repeat the status).
    # A refusal (the worker's loop is stalled by the slow model) is as prompt as a deadline.
    expected = ("DeadlineExceeded", "ResourceExhausted")
    others = {
        k: v
        for k, v in load.error_kinds.items()
        if k not in expected and not any(f"code = {e}" in k for e in expected)
    }
    detail = f"model takes {per_run:.2f} s on an idle core; {probe}"
    if others:
        detail += f"; failed: statuses other than DEADLINE_EXCEEDED/RESOURCE_EXHAUSTED: {others}"
    detail += f"; a fast request succeeds {recovery:.1f} s after the load"
    if recovery > cfg.recovery_limit_s or not alive:
        detail += f"; failed: no recovery within {cfg.recovery_limit_s:g} s"
    return _result(name, load, detail, zero_loss=False)
