"""Client-side latency at the challenge's paced rate, measured with a light client, next to
the Python gRPC floor.

    python -m loadtest.paced --rate 1200 --seconds 15 --rounds 2

h2load sends the same single-row ModelInfer bytes (tritonclient's raw form) at a fixed rate
to ``pronto serve`` (as deployed: metrics and drift on) and to the bare grpc.aio server
(``loadtest.compare.bare_server``), each with the same number of processes, in rounds whose
order alternates, and logs every request's time (``--log-file``); the percentiles come from
those logs. The shape is the challenge's paced ghz runs': 4 connections, at most 13 requests
in flight on each (52 in all; ghz: 50).

Why: the challenge takes its client-side percentiles from ghz, which at this rate uses a
large share of a 2-core machine itself, so its tail includes its own waits for a core.
h2load costs a fraction of that, and the floor measured the same way is what Python gRPC
itself gives at this rate on the same machine. h2load sends on a timer; a request whose turn
comes while all 13 streams of its connection are busy waits, and that wait is not in its
time (at 52 in flight against a few requests in flight on average, it rarely happens).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.compare.run import bare_floor
from loadtest.ghz import find_tool
from loadtest.h2load import INFER_PATH, check_request, raw_request_from_json, write_request
from loadtest.runner import machine_description
from loadtest.trace_cost import add_side_by_side_arguments, serving
from pronto_cli.procs import free_port, port_block

__all__ = ["latencies_ms", "main", "measure", "paced_command", "summarize", "table"]

#: connections and the requests in flight on each: the challenge's ghz shape
CONNECTIONS = 4
STREAMS = 13
#: latency bounds whose exceedances are counted (the challenge's server-side and
#: client-side p99 bounds)
BOUNDS_MS = (5.0, 10.0)


def paced_command(address: str, body: Path, rate: float, seconds: float, log: Path) -> list[str]:
    """h2load at ``rate`` requests a second in all, every request's time into ``log``."""
    return [
        find_tool("h2load"),
        f"--duration={round(seconds * 1000)}ms",
        f"--clients={CONNECTIONS}",
        f"--max-concurrent-streams={STREAMS}",
        f"--rps={max(1, round(rate / CONNECTIONS))}",  # per connection
        "--threads=1",
        f"--data={body}",
        "--header=content-type: application/grpc",
        "--header=te: trailers",
        f"--log-file={log}",
        f"http://{address}{INFER_PATH}",
    ]


def latencies_ms(log: Path) -> tuple[np.ndarray, int]:
    """Every logged request's time in ms, and how many did not answer HTTP 200 (h2load's
    log: start time, status, µs until the end of the response, tab-separated)."""
    times, failed = [], 0
    for line in log.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        times.append(int(fields[2]) / 1000)
        failed += fields[1] != "200"
    return np.asarray(times, dtype=float), failed


def summarize(times_ms: np.ndarray, failed: int, seconds: float) -> dict[str, Any]:
    """Count, rate, percentiles, the slowest, and how many took longer than each bound."""
    if not len(times_ms):
        raise RuntimeError("h2load logged no request")
    p50, p95, p99, p999 = np.percentile(times_ms, [50, 95, 99, 99.9])
    summary = {
        "requests": len(times_ms),
        "failed": failed,
        "rps": len(times_ms) / seconds,
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "p99_9_ms": float(p999),
        "max_ms": float(times_ms.max()),
    }
    for bound in BOUNDS_MS:
        summary[f"over_{bound:g}_ms"] = int((times_ms > bound).sum())
    return summary


def measure(
    arms: dict[str, str], body: Path, rate: float, seconds: float, rounds: int, logs: Path
) -> dict[str, list[dict[str, Any]]]:
    """Each arm (name -> address) paced at ``rate`` for ``seconds``, ``rounds`` times in an
    order that alternates; a summary per arm and round."""
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
    names = list(arms)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            log = logs / f"{name}-{round_}.log"
            cmd = paced_command(arms[name], body, rate, seconds, log)
            subprocess.run(cmd, check=True, capture_output=True, timeout=seconds + 60)
            found[name].append(summarize(*latencies_ms(log), seconds))
    return found


def table(found: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: one row per arm and round."""
    bounds = " | ".join(f"over {b:g} ms" for b in BOUNDS_MS)
    lines = [
        f"| server | round | requests | failed | req/s | p50 ms | p95 ms | p99 ms | p99.9 ms "
        f"| max ms | {bounds} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        + " | ".join("---:" for _ in BOUNDS_MS)
        + " |",
    ]
    for name, rounds in found.items():
        for k, s in enumerate(rounds, 1):
            over = " | ".join(str(s[f"over_{b:g}_ms"]) for b in BOUNDS_MS)
            lines.append(
                f"| {name} | {k} | {s['requests']:,} | {s['failed']} | {s['rps']:,.0f} "
                f"| {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['p99_ms']:.2f} "
                f"| {s['p99_9_ms']:.2f} | {s['max_ms']:.1f} | {over} |"
            )
    return "\n".join(lines)


def _pronto(repository: Path, model: str, workers: int, port: int) -> list[str]:
    return [
        sys.executable, "-m", "pronto_cli", "serve",
        "--model-repository", str(repository), "--models", model,
        "--workers", str(workers), "--port", str(port),
        "--worker-base-port", str(port_block(workers)),
        "--metrics-port", str(free_port()), "--log-level", "WARNING",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Client-side latency at a paced rate (h2load), Pronto next to the bare "
        "grpc.aio floor."
    )
    add_side_by_side_arguments(parser, seconds=15.0, rounds=2)
    parser.add_argument("--workers", type=int, default=2, help="processes of each server")
    parser.add_argument("--rate", type=float, default=1200, help="requests a second in all")
    args = parser.parse_args(argv)
    request = json.loads(args.request.read_text())[0]
    with tempfile.TemporaryDirectory(prefix="paced-") as tmp, ExitStack() as stack:
        body = write_request(raw_request_from_json(request), Path(tmp) / "request.bin")
        port = free_port()
        stack.enter_context(
            serving(_pronto(args.model_repository, args.model, args.workers, port), port)
        )
        floor, _ = stack.enter_context(bare_floor(args.workers, event_loop="uvloop"))
        arms = {"pronto": f"127.0.0.1:{port}", "floor": floor}
        for address in arms.values():
            check_request(address, body)  # an error is never counted as an answer
        found = measure(arms, body, args.rate, args.seconds, args.rounds, Path(tmp))
    machine = ", ".join(f"{k}: {v}" for k, v in machine_description().items())
    print(f"{machine}; {args.rate:g} requests/s, {args.seconds:g} s a round")
    print(table(found))
    if args.out is not None:
        args.out.write_text(json.dumps({"rate": args.rate, "results": found}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
