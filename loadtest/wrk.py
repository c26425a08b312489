"""Run wrk with a rotating-body Lua script and parse its JSON summary line."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from loadtest.ghz import LoadResult, children_cpu, find_tool

__all__ = ["WrkRun", "run_wrk"]

_SCRIPT = Path(__file__).resolve().parent / "wrk" / "rotate.lua"


@dataclass
class WrkRun:
    """One wrk invocation: ``connections`` keep-alive HTTP/1.1 connections."""

    url: str
    path: str
    bodies_file: Path
    duration_s: float = 10.0
    connections: int = 32
    threads: int = 2
    #: requests per second, on a schedule each wrk thread keeps for its connections
    rate: int | None = None
    headers: dict[str, str] | None = None
    #: count responses per HTTP status (``LoadResult.statuses``)
    statuses: bool = False
    content_type: str = "application/json"
    #: ``bodies_file`` holds one hex-encoded binary body per line (gRPC-Web)
    hex_bodies: bool = False


def run_wrk(run: WrkRun, out_dir: Path, name: str) -> LoadResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        WRK_BODIES=str(run.bodies_file),
        WRK_PATH=run.path,
        WRK_THREAD_RATE=f"{run.rate / run.threads:g}" if run.rate else "0",
        WRK_HEADERS="\n".join(f"{k}: {v}" for k, v in (run.headers or {}).items()),
        WRK_STATUS="1" if run.statuses else "0",
        WRK_CONTENT_TYPE=run.content_type,
        WRK_HEX="1" if run.hex_bodies else "0",
    )
    cmd = [
        find_tool("wrk"),
        f"-t{run.threads}",
        f"-c{run.connections}",
        f"-d{run.duration_s:g}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(_SCRIPT),
        run.url,
    ]
    before = children_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    client_cpu = children_cpu() - before
    (out_dir / f"{name}.wrk.txt").write_text(proc.stdout + proc.stderr)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    (out_dir / f"{name}.wrk.json").write_text(json.dumps(raw, indent=1))
    errors = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"]
    errors += raw["status_errors"] + raw["timeouts"]
    duration = raw["duration_us"] / 1e6
    return LoadResult(
        tool="wrk",
        count=raw["requests"],
        ok=raw["requests"] - raw["status_errors"],
        errors=errors,
        duration_s=duration,
        rps=raw["requests"] / duration if duration else 0.0,
        latency_ms={
            "p50": raw["p50_us"] / 1e3,
            "p90": raw["p90_us"] / 1e3,
            "p95": raw["p95_us"] / 1e3,
            "p99": raw["p99_us"] / 1e3,
            "mean": raw["mean_us"] / 1e3,
            "max": raw["max_us"] / 1e3,
        },
        statuses={int(k): int(v) for k, v in raw.get("statuses", {}).items()},
        error_kinds={
            k: raw[k]
            for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
            if raw[k]
        },
        client_cpu_s=client_cpu,
    )
