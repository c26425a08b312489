"""What drift monitoring costs: the same ghz load with ``--drift`` and ``--no-drift``.

``python -m loadtest.monitor.drift_bench`` starts a fresh server for every run (the setting
is per process), alternates the order of the two arms between rounds so slow drifts of the
machine hit both, and writes ``loadtest/results/drift/summary.json`` in the shape of the
other scenarios, plus ``latency.png``: the server-side p50/p95/p99 over the whole benchmark,
from a Prometheus that scraped every run. ``docs/benchmarks.md`` is regenerated from the
summaries.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtest.monitor.drift_cost import drift_cpu_per_request
from loadtest.monitor.latency_plot import render_latency_png
from loadtest.monitor.prometheus import LocalPrometheus, prometheus_config
from loadtest.report import RESULTS_DIR, update_benchmarks_doc, write_summary
from loadtest.runner import DATA_DIR, RunOutcome, machine_description, run_one
from loadtest.stack import local_stack
from pronto_cli.procs import free_port
from pronto_contract import has_models

__all__ = ["cost_table", "main", "overhead_table"]

SCENARIO = {
    "name": "drift",
    "description": "Drift monitoring on and off (`--drift` / `--no-drift`), same unpaced gRPC "
    "Predict load, a fresh server per run, arms alternated between rounds. Overhead = "
    "throughput lost with drift on; CPU per request from the server's process tree. On a "
    "small machine shared with other work, identical runs differ by more than the effect "
    "(compare the runs of one arm), so the second table measures the drift path alone, "
    "in-process, as a share of the server's CPU per request; the PNG shows the server-side "
    "percentiles of every run.",
}
#: (payload, rows per request, ghz concurrency, connections)
LOADS = [("predict", 1, 50, 4), ("predict", 256, 8, 2)]


def _spec(payload: str, batch: int, mode: str, rnd: int, duration: float, conc: int, conns: int):
    name = f"{payload}{'-b' + str(batch) if batch > 1 else ''}-drift-{mode}-{rnd + 1}"
    return {
        "name": name,
        "tool": "ghz",
        "target": "grpc",
        "payload": payload,
        "duration_s": duration,
        "concurrency": conc,
        "connections": conns,
        "thresholds": {"max_errors": 0},
    }


def overhead_table(runs: list[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    """Markdown table of both arms per load, and the throughput overhead per load."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["batch"], run["drift"]), []).append(run)
    lines = [
        "| rows per request | drift | runs | mean RPS | mean rows/s | server CPU µs per row "
        "| p50 ms | p99 ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    overhead: dict[str, float] = {}
    for batch in sorted({b for b, _ in groups}):
        rps: dict[str, float] = {}
        for mode in ("off", "on"):
            rs = groups.get((batch, mode), [])
            if not rs:
                continue
            rps[mode] = statistics.mean(r["result"]["rps"] for r in rs)
            rows = sum(r["result"]["ok"] for r in rs) * batch
            cpu = sum(r["server"]["cpu_seconds"] for r in rs)
            lines.append(
                f"| {batch} | {mode} | {len(rs)} | {rps[mode]:,.0f} | {rps[mode] * batch:,.0f} "
                f"| {cpu / max(rows, 1) * 1e6:,.1f} "
                f"| {statistics.mean(r['result']['latency_ms']['p50'] for r in rs):.2f} "
                f"| {statistics.mean(r['result']['latency_ms']['p99'] for r in rs):.2f} |"
            )
        if "on" in rps and "off" in rps:
            overhead[f"batch{batch}"] = round((rps["off"] - rps["on"]) / rps["off"] * 100, 1)
    summary = ", ".join(
        f"{v:+.1f} % at {k.removeprefix('batch')} row(s) per request" for k, v in overhead.items()
    )
    text = "\n".join(lines) + f"\n\nThroughput lost to drift monitoring: {summary} (budget: 5 %)."
    return text, overhead


def cost_table(runs: list[dict[str, Any]], model_repository: Path) -> tuple[str, dict[str, float]]:
    """Drift CPU per request measured in-process, as a share of the server's CPU per request."""
    lines = [
        "| rows per request | drift CPU µs per request (request path + timer) "
        "| server CPU µs per request, drift off | drift share of server CPU |",
        "| ---: | ---: | ---: | ---: |",
    ]
    shares: dict[str, float] = {}
    for payload, batch, _, _ in LOADS:
        data = DATA_DIR / (f"{payload}_b{batch}.json" if batch > 1 else f"{payload}.json")
        cost = drift_cpu_per_request(model_repository, data, 3000 if batch == 1 else 200)
        off = [r for r in runs if r["batch"] == batch and r["drift"] == "off"]
        per_request = sum(r["server"]["cpu_seconds"] for r in off) / max(
            sum(r["result"]["ok"] for r in off), 1
        )
        share = cost["total_us"] / (per_request * 1e6) * 100 if per_request else 0.0
        shares[f"batch{batch}"] = round(share, 2)
        lines.append(
            f"| {batch} | {cost['total_us']:.1f} ({cost['observe_us']:.2f} + "
            f"{cost['process_us']:.1f}) | {per_request * 1e6:,.0f} | {share:.1f} % |"
        )
    return "\n".join(lines), shares


def _measure(
    spec: dict[str, Any],
    batch: int,
    mode: str,
    args: argparse.Namespace,
    targets: Path,
    marks: list[tuple[float, str]],
) -> RunOutcome:
    """One run on a fresh server; retried when the server cannot start (on a shared machine
    another process may take a free port between picking and binding it)."""
    # local_stack passes the environment on: PRONTO_DRIFT sets --drift
    os.environ["PRONTO_DRIFT"] = "true" if mode == "on" else "false"
    for attempt in range(3):
        logs = args.out / "logs" / f"{spec['name']}-{attempt}"
        try:
            with local_stack(args.model_repository, args.workers, False, logs) as stack:
                target = {"targets": [stack.metrics], "labels": {"drift": mode}}
                targets.write_text(json.dumps([target]))
                time.sleep(2)  # the file watcher adds the target
                marks.append((time.time(), spec["name"]))
                outcome = run_one(spec, stack, args.out, batch)
                time.sleep(1.5)  # one last scrape of this server
                return outcome
        except RuntimeError as exc:
            if attempt == 2:
                raise
            print(f"{spec['name']}: {exc}; retrying", flush=True)
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.monitor.drift_bench", description=__doc__)
    p.add_argument("--model-repository", type=Path, default=Path("models"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "drift")
    p.add_argument("--no-doc", action="store_true", help="do not regenerate docs/benchmarks.md")
    args = p.parse_args(argv)
    if not has_models(args.model_repository):
        print(f"no model in {args.model_repository}: run `pronto train` first", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pronto-drift-bench-"))
    targets = work / "targets.json"
    targets.write_text("[]")
    config = prometheus_config([], scrape_interval="1s", evaluation_interval="1s")
    # one Prometheus for every run: each new server's port goes into a file it watches
    config["scrape_configs"] = [
        {"job_name": "pronto", "file_sd_configs": [{"files": [str(targets)]}]}
    ]
    runs: list[dict[str, Any]] = []
    marks: list[tuple[float, str]] = []
    saved = os.environ.get("PRONTO_DRIFT")
    with LocalPrometheus(config, port=free_port(), workdir=work / "prometheus") as prom:
        started = time.time()
        for payload, batch, conc, conns in LOADS:
            for rnd in range(args.rounds):
                for mode in ("off", "on") if rnd % 2 == 0 else ("on", "off"):
                    spec = _spec(payload, batch, mode, rnd, args.duration, conc, conns)
                    outcome = _measure(spec, batch, mode, args, targets, marks)
                    run = outcome.as_dict() | {"batch": batch, "drift": mode}
                    runs.append(run)
                    print(f"{spec['name']}: {outcome.result.rps:,.0f} RPS", flush=True)
        png = render_latency_png(
            prom.api, started, time.time(), args.out / "latency.png",
            "Server latency percentiles during the drift benchmark", marks,
        )  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    if saved is None:
        os.environ.pop("PRONTO_DRIFT", None)
    else:
        os.environ["PRONTO_DRIFT"] = saved
    table, overhead = overhead_table(runs)
    costs, shares = cost_table(runs, args.model_repository)
    rel = os.path.relpath(png, Path(__file__).resolve().parents[2] / "docs")
    image = f"![Server latency percentiles over the drift benchmark]({rel})"
    write_summary(
        SCENARIO,
        runs,
        machine_description(),
        "python -m loadtest.monitor.drift_bench " + " ".join(argv or sys.argv[1:]),
        args.out,
        {
            "overhead_percent": overhead,
            "drift_cpu_share_percent": shares,
            "tables": [table, costs, image],
        },
    )
    if not args.no_doc:
        update_benchmarks_doc()
    print(table, costs, sep="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
