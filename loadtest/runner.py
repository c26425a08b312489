"""Run a scenario file against a stack and judge it against its thresholds."""

from __future__ import annotations

import math
import os
import platform
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from loadtest.ghz import GhzRun, LoadResult, run_ghz
from loadtest.procstats import ProcessSampler
from loadtest.stack import Stack
from loadtest.wrk import WrkRun, run_wrk

__all__ = [
    "RunOutcome",
    "histogram_quantile",
    "latency_histogram",
    "load_scenario",
    "machine_description",
    "run_scenario",
]

LOADTEST_DIR = Path(__file__).resolve().parent
SCENARIO_DIR = LOADTEST_DIR / "scenarios"
DATA_DIR = LOADTEST_DIR / "data"

# what a run's ``thresholds`` may say; anything else is a typo that would judge nothing
THRESHOLDS = frozenset(
    {
        "min_count", "max_errors", "p99_ms", "min_rows_per_s", "min_achieved",
        "server_p99_ms", "max_process_rss_mib",
    }
)  # fmt: skip

_CALLS = {
    "oip": "inference.GRPCInferenceService.ModelInfer",
    "predict": "pronto.v1.PredictionService.Predict",
}


@dataclass
class RunOutcome:
    name: str
    spec: dict[str, Any]
    result: LoadResult
    server: dict[str, float]
    failures: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec,
            "result": self.result.as_dict(),
            "server": self.server,
            "passed": self.passed,
            "failures": self.failures,
            **self.extra,
        }


def load_scenario(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if not path.exists():
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"no scenario {name_or_path!r} (known: {known})")
    scenario: dict[str, Any] = yaml.safe_load(path.read_text())
    for run in scenario.get("runs", []):
        unknown = set(run.get("thresholds", {})) - THRESHOLDS
        if unknown:
            raise ValueError(
                f"{path}: run {run.get('name')!r}: unknown thresholds {sorted(unknown)} "
                f"(known: {', '.join(sorted(THRESHOLDS))})"
            )
    return scenario


def machine_description() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_generator": "same machine",
    }


def _data_file(payload: str, batch: int, data_dir: Path) -> Path:
    suffix = f"_b{batch}" if batch > 1 else ""
    ext = ".jsonl" if payload.startswith("rest_") else ".json"
    path = data_dir / f"{payload}{suffix}{ext}"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run `python -m loadtest.data`")
    return path


def _judge(spec: dict[str, Any], result: LoadResult, batch: int) -> list[str]:
    t = spec.get("thresholds", {})
    failures = []
    if "min_count" in t and result.ok < t["min_count"]:
        failures.append(f"{result.ok} successful requests < {t['min_count']}")
    if "max_errors" in t and result.errors > t["max_errors"]:
        failures.append(f"{result.errors} errors > {t['max_errors']}: {result.error_kinds}")
    p99 = result.latency_ms.get("p99", 0.0)
    if "p99_ms" in t and p99 > t["p99_ms"]:
        failures.append(f"p99 {p99:.2f} ms > {t['p99_ms']} ms")
    rows = result.rps * batch
    if "min_rows_per_s" in t and rows < t["min_rows_per_s"]:
        failures.append(f"{rows:,.0f} rows/s < {t['min_rows_per_s']:,}")
    if "min_achieved" in t and spec.get("rps") and result.rps < t["min_achieved"] * spec["rps"]:
        failures.append(f"achieved {result.rps:.0f} RPS < {t['min_achieved']:.0%} of {spec['rps']}")
    return failures


def latency_histogram(metrics: str) -> dict[float, float]:
    """The server's request-latency histogram (``pronto_request_duration_seconds``, every
    series summed): cumulative counts by upper bound in seconds."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    counts: dict[float, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        if family.name == "pronto_request_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    counts[float(sample.labels["le"])] += sample.value
    return dict(counts)


def histogram_quantile(q: float, counts: dict[float, float]) -> float | None:
    """The ``q`` quantile of cumulative bucket ``counts``, interpolated inside its bucket as
    Prometheus's ``histogram_quantile`` does; ``None`` without observations."""
    bounds = sorted(counts)
    total = counts.get(math.inf, counts[bounds[-1]] if bounds else 0.0)
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = counts[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # past the last finite bound: that bound, as Prometheus says
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _server_latency(
    metrics: str, before: dict[float, float], served: int
) -> dict[str, float | None]:
    """p50/p99 in ms of what the server observed since ``before``. Workers fold their
    observations into the shared histogram on a timer, so wait (up to 10 s) until it holds
    at least the ``served`` requests the load generator saw answered."""
    deadline = time.monotonic() + 10
    while True:
        after = latency_histogram(metrics)
        delta = {b: after[b] - before.get(b, 0.0) for b in after}
        if delta.get(math.inf, 0.0) >= served or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    out: dict[str, float | None] = {}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        value = histogram_quantile(q, delta)
        out[name] = None if value is None else round(value * 1000.0, 3)
    return out


def run_one(
    spec: dict[str, Any],
    stack: Stack,
    out_dir: Path,
    batch: int = 1,
    headers: dict[str, str] | None = None,
    data_dir: Path = DATA_DIR,
) -> RunOutcome:
    name, payload = spec["name"], spec["payload"]
    data = _data_file(payload, batch, data_dir)
    histogram = latency_histogram(stack.metrics) if stack.metrics else None
    with ProcessSampler(stack.server_pids) as sampler:
        if spec["tool"] == "ghz":
            address = stack.grpc if spec["target"] == "grpc" else stack.envoy
            if address is None:
                raise RuntimeError(f"{name}: no {spec['target']} address")
            run = GhzRun(
                address=address,
                call=_CALLS[payload],
                data_file=data,
                concurrency=spec.get("concurrency", 50),
                connections=spec.get("connections", 1),
                total=spec.get("total"),
                duration_s=spec.get("duration_s"),
                rps=spec.get("rps"),
                metadata=headers,
            )
            result = run_ghz(run, out_dir, name)
        else:
            if stack.envoy is None:
                raise RuntimeError(f"{name}: REST runs need Envoy")
            model = spec.get("model", "flight-delay")
            path = (
                f"/v1/models/{model}:predict"
                if payload == "rest_predict"
                else f"/v2/models/{model}/infer"
            )
            wrk = WrkRun(
                url=f"http://{stack.envoy}",
                path=path,
                bodies_file=data,
                duration_s=spec.get("duration_s", 10),
                connections=spec.get("connections", 32),
                rate=spec.get("rps"),
                headers=headers,
            )
            result = run_wrk(wrk, out_dir, name)
    outcome = RunOutcome(name, spec, result, sampler.stats.as_dict())
    outcome.failures = _judge(spec, result, batch)
    rss_limit = spec.get("thresholds", {}).get("max_process_rss_mib")
    largest = outcome.server.get("peak_process_rss_mib", 0.0)
    if rss_limit is not None and largest > rss_limit:
        outcome.failures.append(f"largest server process {largest:.0f} MiB RSS > {rss_limit} MiB")
    if stack.metrics and histogram is not None:
        server = _server_latency(stack.metrics, histogram, result.ok)
        outcome.extra["server_latency_ms"] = server
        limit = spec.get("thresholds", {}).get("server_p99_ms")
        if limit is not None and (server["p99"] is None or server["p99"] > limit):
            outcome.failures.append(f"server-side p99 {server['p99']} ms > {limit} ms")
    if batch > 1:
        outcome.extra["rows_per_s"] = round(result.rps * batch)
    return outcome


def run_scenario(
    scenario: dict[str, Any],
    stack: Stack,
    out_dir: Path,
    data_dir: Path = DATA_DIR,
    headers: dict[str, str] | None = None,
) -> list[RunOutcome]:
    """Run every run of ``scenario``; peak scenarios step the rate up."""
    batch = int(scenario.get("batch", 1))
    outcomes: list[RunOutcome] = []
    for spec in scenario["runs"]:
        if "steps" not in scenario:
            outcomes.append(run_one(spec, stack, out_dir, batch, headers, data_dir))
            time.sleep(1)
            continue
        best: RunOutcome | None = None
        steps = []
        for rate in scenario["steps"]:
            step = {
                **spec,
                "name": f"{spec['name']}-{rate}",
                "rps": rate,
                "duration_s": scenario.get("step_duration_s", 10),
            }
            outcome = run_one(step, stack, out_dir, batch, headers, data_dir)
            steps.append(
                {
                    "rps_target": rate,
                    "rps": round(outcome.result.rps, 1),
                    "p99_ms": outcome.result.latency_ms.get("p99"),
                    "errors": outcome.result.errors,
                    "passed": outcome.passed,
                }
            )
            if not outcome.passed:
                break
            best = outcome
            time.sleep(1)
        peak = best or outcome
        final = RunOutcome(
            spec["name"],
            spec,
            peak.result,
            peak.server,
            [] if best else ["no step met the thresholds"],
            {**peak.extra, "steps": steps, "peak_rps": best.spec["rps"] if best else 0},
        )
        outcomes.append(final)
    return outcomes
