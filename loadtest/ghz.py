"""Run ghz and reduce its JSON report to the figures the summaries need."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GhzRun", "LoadResult", "children_cpu", "find_tool", "run_ghz", "write_ghz_html"]

_ROOT = Path(__file__).resolve().parents[1]


def find_tool(name: str) -> str:
    """Locate ghz/wrk: PATH first, then the project's ``.tools/bin``."""
    found = shutil.which(name) or shutil.which(name, path=str(_ROOT / ".tools" / "bin"))
    if not found:
        raise FileNotFoundError(f"{name} not found: run `make setup`")
    return found


@dataclass
class LoadResult:
    """Client-side outcome of one load run, tool-independent."""

    tool: str
    count: int
    ok: int
    errors: int
    duration_s: float
    rps: float
    latency_ms: dict[str, float]
    error_kinds: dict[str, int] = field(default_factory=dict)
    #: responses per HTTP status (wrk with ``statuses=True``)
    statuses: dict[int, int] = field(default_factory=dict)
    #: CPU seconds the load generator's own process used (it shares the machine)
    client_cpu_s: float = 0.0
    #: p50 and p99 per answer status, where the tool reports each answer (ghz's details)
    latency_by_status_ms: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "count": self.count,
            "ok": self.ok,
            "errors": self.errors,
            "duration_s": round(self.duration_s, 3),
            "rps": round(self.rps, 1),
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
            "error_kinds": self.error_kinds,
        }


@dataclass
class GhzRun:
    """One ghz invocation against a gRPC address."""

    address: str
    call: str
    data_file: Path
    concurrency: int = 50
    connections: int = 1
    total: int | None = None
    duration_s: float | None = None
    rps: int | None = None
    protoset: Path = _ROOT / "gateway" / "generated" / "pronto.pb"
    timeout_s: float = 10.0
    metadata: dict[str, str] | None = None
    extra: list[str] = field(default_factory=list)

    def command(self, output: Path, fmt: str) -> list[str]:
        cmd = [
            find_tool("ghz"),
            "--insecure",
            f"--protoset={self.protoset}",
            f"--call={self.call}",
            f"--data-file={self.data_file}",
            f"--concurrency={self.concurrency}",
            f"--connections={self.connections}",
            f"--timeout={self.timeout_s}s",
            f"--format={fmt}",
            f"--output={output}",
        ]
        if self.duration_s:
            # "wait" lets in-flight calls finish at the end instead of cancelling
            # them, which ghz would otherwise count as errors.
            cmd += [f"--duration={self.duration_s}s", "--duration-stop=wait"]
        if self.total:
            cmd.append(f"--total={self.total}")
        if self.rps:
            cmd.append(f"--rps={self.rps}")
        if self.metadata:
            cmd.append("--metadata=" + json.dumps(self.metadata))
        return [*cmd, *self.extra, self.address]


def _percentiles(report: dict[str, Any]) -> dict[str, float]:
    wanted = {50: "p50", 90: "p90", 95: "p95", 99: "p99"}
    out: dict[str, float] = {}
    for item in report.get("latencyDistribution") or []:
        key = wanted.get(int(item["percentage"]))
        if key:
            out[key] = item["latency"] / 1e6
    out["mean"] = report.get("average", 0) / 1e6
    out["max"] = report.get("slowest", 0) / 1e6
    return out


def _by_status(details: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """p50 and p99 (ms) of each status's answers, from ghz's per-call details."""
    latencies: dict[str, list[float]] = {}
    for call in details:
        latencies.setdefault(str(call.get("status", "")), []).append(call["latency"] / 1e6)
    return {
        status: {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}
        for status, values in sorted(latencies.items())
    }


def parse_ghz_report(report: dict[str, Any]) -> LoadResult:
    codes: dict[str, int] = dict(report.get("statusCodeDistribution") or {})
    ok = int(codes.get("OK", 0))
    count = int(report.get("count", 0))
    errors = sum(v for k, v in codes.items() if k != "OK")
    kinds = {k: int(v) for k, v in codes.items() if k != "OK"}
    kinds.update({k[:200]: int(v) for k, v in (report.get("errorDistribution") or {}).items()})
    return LoadResult(
        tool="ghz",
        count=count,
        ok=ok,
        errors=errors,
        duration_s=report.get("total", 0) / 1e9,
        rps=float(report.get("rps", 0.0)),
        latency_ms=_percentiles(report),
        error_kinds=kinds,
        latency_by_status_ms=_by_status(report.get("details") or []),
    )


def run_ghz(run: GhzRun, out_dir: Path, name: str) -> LoadResult:
    """Run ghz once, keep its JSON report and its own HTML report in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{name}.ghz.json"
    before = children_cpu()
    proc = subprocess.run(run.command(json_path, "json"), capture_output=True, text=True)
    client_cpu = children_cpu() - before
    if not json_path.exists() or json_path.stat().st_size == 0:
        raise RuntimeError(f"ghz failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    write_ghz_html(json_path, out_dir / f"{name}.ghz.html")
    report = json.loads(json_path.read_text())
    result = parse_ghz_report(report)
    # The per-request details make the JSON large; what the summary takes from them (the
    # percentiles per status) is in the result, and the HTML report keeps them for its charts.
    report.pop("details", None)
    json_path.write_text(json.dumps(report, indent=1))
    result.client_cpu_s = client_cpu
    return result


def children_cpu() -> float:
    """CPU seconds used so far by this process's children that have been waited for."""
    times = os.times()
    return times.children_user + times.children_system


def write_ghz_html(json_path: Path, html_path: Path) -> None:
    """ghz's own HTML report of a run, rendered from its JSON report.

    ghz writes one format per run, and a second run would be a different sample, so
    ``ghzhtml`` (loadtest/ghzhtml, built by ``make setup``) feeds the JSON to ghz's own
    printer and template.
    """
    proc = subprocess.run(
        [find_tool("ghzhtml"), str(json_path), str(html_path)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ghzhtml failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
