"""Side by side on one machine: Pronto, MLServer 1.7 and a bare grpc.aio server.

Throughput ratios come from h2load, a C HTTP/2 client light enough to leave the
cores to the servers: Pronto and the bare grpc.aio floor get identical request
bytes (one single-row OIP ModelInfer in tritonclient's raw form) in alternating
rounds while both are up, so machine noise hits both alike; a 256-row body gives
Pronto's rows/s. Latency percentiles come from the same ghz scenario (single-row
OIP ModelInfer, 50 concurrent requests, distinct rows) run against each server in
turn, with the same number of processes. MLServer runs from its own virtual
environment (``.tools/mlserver-venv``, created by ``make compare-setup``) in both
its in-process and parallel-worker modes; the better of the two is the one
compared.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from loadtest.ghz import GhzRun, LoadResult, run_ghz
from loadtest.h2load import (
    H2loadRun,
    check_request,
    raw_request_from_json,
    run_h2load,
    write_request,
)
from loadtest.procstats import ProcessSampler
from loadtest.report import update_benchmarks_doc, write_summary
from loadtest.runner import machine_description
from loadtest.stack import local_stack
from pronto_cli.procs import free_port, stop_process, wait_for_grpc_health, wait_until
from pronto_contract import MODEL_FILE, Manifest, latest_manifest, version_dir
from pronto_contract.fields import usable_cpus

if TYPE_CHECKING:
    from loadtest.cli import BenchSettings

__all__ = ["MLSERVER_VENV", "bare_floor", "run_compare"]

ROOT = Path(__file__).resolve().parents[2]
MLSERVER_VENV = ROOT / ".tools" / "mlserver-venv"
CALL = "inference.GRPCInferenceService.ModelInfer"
DURATION_S = 20
CONCURRENCY = 50
#: h2load: alternating rounds of ROUND_S seconds per server
ROUNDS = 3
ROUND_S = 5.0


def _wait_model_ready(
    address: str, model: str, proc: subprocess.Popen, timeout: float = 120
) -> None:
    from server.generated.inference import grpc_service_pb2 as pb
    from server.generated.inference import grpc_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def ready() -> bool:
            try:
                reply = stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=1)
            except grpc.RpcError:
                return False
            return bool(reply.ready)

        wait_until(ready, f"{model} on {address}", timeout, [proc], interval=0.5)


@contextlib.contextmanager
def bare_floor(
    workers: int, log: Path | None = None, event_loop: str = "asyncio"
) -> Iterator[tuple[str, int]]:
    """The bare grpc.aio floor (:mod:`loadtest.compare.bare_server`) on a free port, until
    the block ends: its address and pid. Output goes to ``log`` (default: inherited)."""
    port = free_port()
    cmd = [sys.executable, "-m", "loadtest.compare.bare_server", "--port", str(port)]
    cmd += ["--workers", str(workers), "--event-loop", event_loop]
    with contextlib.ExitStack() as files:
        out = files.enter_context(log.open("wb")) if log is not None else None
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None)
    try:
        wait_for_grpc_health(f"127.0.0.1:{port}", timeout=90, proc=proc)
        yield f"127.0.0.1:{port}", proc.pid
    finally:
        stop_process(proc)


@contextlib.contextmanager
def _mlserver(
    manifest: Manifest, onnx: Path, parallel_workers: int, log: Path
) -> Iterator[tuple[str, int]]:
    from loadtest.compare.mlserver_model import write_mlserver_repository

    binary = MLSERVER_VENV / "bin" / "mlserver"
    if not binary.exists():
        raise FileNotFoundError(f"{binary} missing: run `make compare-setup`")
    port = free_port()
    settings = {
        "host": "127.0.0.1",
        "grpc_port": port,
        "http_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": parallel_workers,
        "debug": False,
    }
    with tempfile.TemporaryDirectory(prefix="mlserver-") as tmp:
        root = write_mlserver_repository(manifest, onnx, Path(tmp), settings)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(binary), "start", str(root)], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            _wait_model_ready(f"127.0.0.1:{port}", manifest.name, proc)
            yield f"127.0.0.1:{port}", proc.pid
        finally:
            stop_process(proc)


def _load(address: str, pid: int, data: Path, out_dir: Path, name: str) -> dict[str, Any]:
    run = GhzRun(
        address=address,
        call=CALL,
        data_file=data,
        concurrency=CONCURRENCY,
        connections=4,
        duration_s=DURATION_S,
    )
    # a short warm-up so JIT-free but lazily initialised paths (pandas, sessions) are hot
    run_ghz(
        GhzRun(address=address, call=CALL, data_file=data, concurrency=8, total=500),
        out_dir,
        f"{name}-warmup",
    )
    with ProcessSampler([pid]) as sampler:
        result: LoadResult = run_ghz(run, out_dir, name)
    return {"name": name, "result": result.as_dict(), "server": sampler.stats.as_dict()}


def h2load_bodies(data_dir: Path, out_dir: Path) -> dict[str, Path]:
    """Framed request bodies, built from the first request of each ghz file."""
    bodies = {}
    for kind, source in (("single", "oip.json"), ("b256", "oip_b256.json")):
        first = json.loads((data_dir / source).read_text())[0]
        bodies[kind] = write_request(raw_request_from_json(first), out_dir / f"{kind}.grpc")
    return bodies


def h2load_rounds(
    targets: dict[str, tuple[str, Path]], out_dir: Path, rounds: int = ROUNDS
) -> dict[str, list[LoadResult]]:
    """Each target (address, body) in turn, ``rounds`` times: A B C A B C ..."""
    for address, body in targets.values():
        check_request(address, body)
    results: dict[str, list[LoadResult]] = {name: [] for name in targets}
    for i in range(rounds):
        for name, (address, body) in targets.items():
            run = H2loadRun(address=address, body=body, duration_s=ROUND_S)
            results[name].append(run_h2load(run, out_dir, f"{name}-h2load-{i}"))
    return results


def floor_summary(results: dict[str, list[LoadResult]]) -> dict[str, Any]:
    """Per-round Pronto/floor ratios (the figure that means something on a busy machine)."""
    pronto, bare = results["pronto"], results["bare-grpc-aio"]
    ratios = [p.rps / b.rps for p, b in zip(pronto, bare, strict=True) if b.rps]
    summary: dict[str, Any] = {
        "rounds": len(pronto),
        "pronto_rps": [round(r.rps) for r in pronto],
        "bare_rps": [round(r.rps) for r in bare],
        "ratio_per_round": [round(r, 3) for r in ratios],
        "ratio_median": round(statistics.median(ratios), 3) if ratios else 0.0,
        "errors": sum(r.errors for rs in results.values() for r in rs),
    }
    if "pronto-b256" in results:
        summary["b256_rows_per_s"] = [round(r.rps * 256) for r in results["pronto-b256"]]
    return summary


def _floor_table(s: dict[str, Any]) -> str:
    lines = [
        "h2load, identical request bytes (tritonclient raw form), alternating rounds:",
        "",
        "| round | Pronto req/s | bare grpc.aio req/s | Pronto / floor | Pronto 256-row rows/s |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    b256 = s.get("b256_rows_per_s", [])
    for i in range(s["rounds"]):
        rows = f"{b256[i]:,}" if i < len(b256) else ""
        lines.append(
            f"| {i + 1} | {s['pronto_rps'][i]:,} | {s['bare_rps'][i]:,} "
            f"| {s['ratio_per_round'][i]:.2f} | {rows} |"
        )
    lines.append(f"| median | | | **{s['ratio_median']:.2f}** | |")
    return "\n".join(lines)


def _ratio_table(entries: list[dict[str, Any]]) -> str:
    pronto = next(e for e in entries if e["name"] == "pronto")["result"]["rps"] or 1.0
    lines = [
        "| server | RPS | p50 ms | p99 ms | errors | server CPU s | RPS / Pronto's |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in entries:
        r = e["result"]
        lines.append(
            f"| {e['name']} | {r['rps']:,.0f} | {r['latency_ms'].get('p50', 0):.2f} "
            f"| {r['latency_ms'].get('p99', 0):.2f} | {r['errors']} "
            f"| {e['server']['cpu_seconds']:.1f} | {r['rps'] / pronto:.2f} |"
        )
    return "\n".join(lines)


def _run_servers(
    settings: BenchSettings, workers: int, out_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Load each server in turn; returns every entry (Pronto first), the best MLServer
    and the h2load floor comparison."""
    from loadtest.compare.mlserver_model import mlserver_payloads

    manifest = latest_manifest(settings.model_repository, settings.model)
    onnx = version_dir(settings.model_repository, settings.model, manifest.version) / MODEL_FILE
    data = settings.data_dir / "oip.json"
    ml_data = out_dir / "mlserver-oip.json"
    ml_data.write_text(json.dumps(mlserver_payloads(json.loads(data.read_text()))))
    logs = out_dir / "logs"
    bodies = h2load_bodies(settings.data_dir, out_dir / "h2load")
    entries = []
    with (
        local_stack(settings.model_repository, workers, False, logs) as stack,
        bare_floor(workers, logs / "bare.log") as (address, pid),
    ):
        floor = floor_summary(
            h2load_rounds(
                {
                    "pronto": (stack.grpc, bodies["single"]),
                    "bare-grpc-aio": (address, bodies["single"]),
                    "pronto-b256": (stack.grpc, bodies["b256"]),
                },
                out_dir / "h2load",
            )
        )
        entries.append(_load(stack.grpc, stack.server_pids[0], data, out_dir, "pronto"))
        entries.append(_load(address, pid, data, out_dir, "bare-grpc-aio"))
    ml = []
    for mode, parallel in (("in-process", 0), (f"{workers}-parallel-workers", workers)):
        log = logs / f"mlserver-{mode}.log"
        with _mlserver(manifest, onnx, parallel, log) as (address, pid):
            ml.append(_load(address, pid, ml_data, out_dir, f"mlserver-{mode}"))
    return entries + ml, max(ml, key=lambda e: e["result"]["rps"]), floor


MIN_VS_MLSERVER = 5.0
MIN_B256_ROWS_PER_S = 1_000_000  # 256-row ModelInfer over gRPC, h2load


def _failures(
    entries: list[dict[str, Any]], vs_ml: float, vs_bare: float, floor: dict[str, Any]
) -> list[str]:
    pronto = entries[0]["result"]
    failures = []
    if vs_ml < MIN_VS_MLSERVER:
        failures.append(f"Pronto/MLServer RPS {vs_ml:.2f} < {MIN_VS_MLSERVER:g}")
    rows = floor.get("b256_rows_per_s")
    if rows and statistics.median(rows) < MIN_B256_ROWS_PER_S:
        failures.append(
            f"256-row rows/s (h2load median) {statistics.median(rows):,.0f} "
            f"< {MIN_B256_ROWS_PER_S:,}"
        )
    if vs_bare < 0.75:
        failures.append(f"Pronto/bare grpc.aio RPS (h2load) {vs_bare:.2f} < 0.75")
    if pronto["latency_ms"].get("p99", 0) > 15:
        failures.append(f"Pronto p99 {pronto['latency_ms']['p99']:.2f} ms > 15 ms")
    if any(e["result"]["errors"] for e in entries):
        failures.append("errors during the comparison")
    return failures


def run_compare(settings: BenchSettings, command: str) -> bool:
    workers = settings.workers or usable_cpus()
    out_dir = settings.results_dir / "compare"
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    entries, best_ml, floor = _run_servers(settings, workers, out_dir)
    pronto = entries[0]["result"]
    vs_ml = pronto["rps"] / max(best_ml["result"]["rps"], 1e-9)
    vs_bare = floor["ratio_median"]
    failures = _failures(entries, vs_ml, vs_bare, floor)
    if floor["errors"]:
        failures.append("h2load errors during the floor comparison")
    table = _ratio_table(entries)
    print(table)
    print(_floor_table(floor))
    for f in failures:
        print("FAIL", f)
    runs = [
        {
            "name": e["name"],
            "spec": {"rps": None, "concurrency": CONCURRENCY, "duration_s": DURATION_S},
            "result": e["result"],
            "server": e["server"],
            "passed": e is not entries[0] or not failures,
            "failures": failures if e is entries[0] else [],
        }
        for e in entries
    ]
    scenario = {"name": "compare", "description": __doc__.split("\n\n")[1].replace("\n", " ")}
    write_summary(
        scenario,
        runs,
        machine_description(),
        command,
        out_dir,
        {
            "ratios": {
                "pronto_over_mlserver": round(vs_ml, 2),
                "pronto_over_bare": round(vs_bare, 2),
                "h2load_floor": floor,
                "mlserver_mode": best_ml["name"],
            },
            "tables": [
                f"Pronto / best MLServer ({best_ml['name']}): **{vs_ml:.2f}×** · "
                f"Pronto / bare grpc.aio (h2load median): **{vs_bare:.0%}**",
                _floor_table(floor),
            ],
        },
    )
    if settings.update_docs:
        update_benchmarks_doc(results_dir=settings.results_dir)
    return not failures
