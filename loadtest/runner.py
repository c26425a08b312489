"""Run a scenario file against a stack and judge it against its thresholds."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from loadtest.ghz import GhzRun, LoadResult, run_ghz
from loadtest.procstats import ProcessSampler
from loadtest.stack import Stack
from loadtest.wrk import WrkRun, run_wrk

__all__ = ["RunOutcome", "load_scenario", "machine_description", "run_scenario"]

LOADTEST_DIR = Path(__file__).resolve().parent
SCENARIO_DIR = LOADTEST_DIR / "scenarios"
DATA_DIR = LOADTEST_DIR / "data"

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
            {"steps": steps, "peak_rps": best.spec["rps"] if best else 0},
        )
        outcomes.append(final)
    return outcomes
