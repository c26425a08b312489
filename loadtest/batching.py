"""Micro-batching benchmark: throughput and p99 with batching off and on, per model.

``python -m loadtest.batching`` serves the default logistic regression, the trainer's
gradient-boosting model and, for contrast, a small dense network side by side, restarts the
server once per batching setting, and drives each model with ghz (single-row OIP ModelInfer)
at a few concurrency levels. The summary lands in ``loadtest/results/batching/summary.json``
and the tables of ``docs/benchmarks.md`` are regenerated.

The gradient-boosting model comes from ``--hgb-repository`` (default: trained into a
temporary folder with ``pronto train --estimator hist_gradient_boosting``, about 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loadtest.ghz import GhzRun, run_ghz
from loadtest.procstats import ProcessSampler
from loadtest.report import RESULTS_DIR, update_benchmarks_doc, write_summary
from loadtest.runner import DATA_DIR, machine_description
from pronto_cli.procs import PRONTO, free_port, port_block, stop_process, wait_for_grpc_health
from pronto_contract import MODEL_FILE, list_versions, version_dir
from pronto_contract.fields import usable_cpus

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
CALL = "inference.GRPCInferenceService.ModelInfer"
LR, HGB, MLP = "flight-delay", "flight-delay-hgb", "mlp-256x8"
MODELS = (LR, HGB, MLP)
MLP_WIDTH, MLP_LAYERS = 256, 8

#: (label, --batching-max-batch-size, --batching-max-queue-delay-us)
SETTINGS = [("off", 0, 0), ("on, 0 µs", 64, 0), ("on, 500 µs", 64, 500)]


def _latest(root: Path, name: str) -> Path:
    versions = list_versions(root, [name])[name]
    return versions[max(versions)]


def _build_mlp(folder: Path) -> None:
    """A dense network (8 × MatMul+Tanh on FP32 [N, 256]): weight-bound, unlike the others.

    One row turns each layer into a matrix-vector product that streams 256 KiB of weights
    for 128 K multiply-adds; a batch reuses the weights for every row.
    """
    import numpy as np
    import onnx
    import onnx.numpy_helper
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    nodes, weights, prev = [], [], "x"
    for i in range(MLP_LAYERS):
        w = rng.standard_normal((MLP_WIDTH, MLP_WIDTH)) / np.sqrt(MLP_WIDTH)
        weights.append(onnx.numpy_helper.from_array(w.astype(np.float32), f"w{i}"))
        out = "y" if i == MLP_LAYERS - 1 else f"h{i}"
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
            helper.make_node("Tanh", [f"m{i}"], [out]),
        ]
        prev = out
    graph = helper.make_graph(
        nodes,
        MLP,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, MLP_WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, MLP_WIDTH])],
        initializer=weights,
    )
    folder.mkdir(parents=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, folder / MODEL_FILE)


def _repository(out: Path, models: Path, hgb: Path | None) -> Path:
    """A repository with the newest version of each model, as version 1."""
    repo = out / "models"
    shutil.rmtree(repo, ignore_errors=True)
    if hgb is None:
        hgb = out / "hgb"
        subprocess.run(
            [*PRONTO, "train", "--estimator", "hist_gradient_boosting",
             "--name", HGB, "--model-repository", str(hgb)],
            check=True, cwd=ROOT,
        )  # fmt: skip
    for name, source in ((LR, models), (HGB, hgb)):
        shutil.copytree(
            _latest(source, name),
            version_dir(repo, name, 1),
            ignore=shutil.ignore_patterns("plots"),
        )
    _build_mlp(version_dir(repo, MLP, 1))
    return repo


def _data_file(out: Path, model: str) -> Path:
    requests: list[dict[str, Any]]
    if model == MLP:
        import numpy as np

        rows = np.random.default_rng(1).random((100, MLP_WIDTH), dtype=np.float32)
        requests = [
            {
                "model_name": MLP,
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "FP32",
                        "shape": [1, MLP_WIDTH],
                        "contents": {"fp32_contents": [round(float(v), 4) for v in row]},
                    }
                ],
            }
            for row in rows
        ]
    else:
        requests = json.loads((DATA_DIR / "oip.json").read_text())
        for r in requests:
            r["model_name"] = model
    path = out / f"oip-{model}.json"
    path.write_text(json.dumps(requests))
    return path


@contextmanager
def _server(repo: Path, workers: int, size: int, delay: int, log: Path) -> Iterator[Any]:
    workers = workers or usable_cpus()
    port, base = free_port(), port_block(workers)
    cmd = [
        *PRONTO, "serve", "--model-repository", str(repo),
        "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port),
        "--worker-base-port", str(base), "--metrics-port", "0", "--model-poll-interval", "0",
        "--batching-max-batch-size", str(size), "--batching-max-queue-delay-us", str(delay),
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        # every worker serving on its private port, not just the first on the shared one
        for i in range(workers):
            wait_for_grpc_health(f"127.0.0.1:{base + i}", timeout=90, proc=proc)
        yield proc, f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


def _table(runs: list[dict[str, Any]], concurrency: list[int]) -> str:
    lines = [
        "#### Micro-batching: RPS / p99 ms / server CPU µs per request, by model, setting "
        "and concurrent callers",
        "",
        "| model | batching | " + " | ".join(f"c={c}" for c in concurrency) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in concurrency) + " |",
    ]
    for model in MODELS:
        for label, _, _ in SETTINGS:
            cells = []
            for c in concurrency:
                run = next(
                    r for r in runs if r["model"] == model and r["batching"] == label
                    and r["concurrency"] == c
                )  # fmt: skip
                result, lat = run["result"], run["result"]["latency_ms"]
                # CPU per request is steadier than RPS on a machine shared with others
                cpu = run["server"].get("cpu_seconds", 0.0) / max(1, result["count"]) * 1e6
                cells.append(f"{result['rps']:,.0f} / {lat.get('p99', 0):.2f} / {cpu:.0f}")
            lines.append(f"| {model} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ort_costs(repo: Path) -> str:
    """What one ONNX Runtime run costs per row in-process: the most batching can save."""
    from server.model import load_model

    lines = [
        "#### ONNX Runtime cost per run, in-process (µs per run / µs per row)",
        "",
        "| model | 1 row | 16 rows | 64 rows |",
        "| --- | ---: | ---: | ---: |",
    ]
    for model in MODELS:
        handle = load_model(model, 1, version_dir(repo, model, 1))
        cells = []
        for rows in (1, 16, 64):
            feeds, outputs = handle.sample_feeds(rows), handle.output_names
            for _ in range(50):
                handle.run(feeds, outputs)
            rounds = []
            for _ in range(5):  # best of five: the machine is shared with the load generator
                started = time.perf_counter()
                for _ in range(200):
                    handle.run(feeds, outputs)
                rounds.append((time.perf_counter() - started) / 200 * 1e6)
            per_run = min(rounds)
            cells.append(f"{per_run:.0f} / {per_run / rows:.1f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _core_costs(repo: Path, concurrency: list[int]) -> str:
    """CPU per request of the inference core alone (no gRPC), c callers in one event loop.

    This is the part of a request that batching can shrink; the rest (gRPC, protobuf) stays.
    """
    import asyncio

    from server.batching import Batcher, BatchingConfig
    from server.core import InferenceCore, InferRequest, Tensor
    from server.model import load_model
    from server.repository import Registry

    lines = [
        "#### Inference core alone, no gRPC: CPU µs per single-row request (best of 3)",
        "",
        "| model | batching | " + " | ".join(f"c={c}" for c in concurrency) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in concurrency) + " |",
    ]
    for model in MODELS:
        for label, size, delay in SETTINGS:
            handle = load_model(model, 1, version_dir(repo, model, 1))
            if size:
                handle.batcher = Batcher(handle, BatchingConfig(size, delay), 256)
            registry = Registry()
            registry.replace([handle])
            core = InferenceCore(registry)
            core.ready = True
            feeds = handle.sample_feeds(1)
            inputs = [Tensor(n, handle.inputs[n].datatype, a) for n, a in feeds.items()]
            request = InferRequest(model, "", inputs)
            cells = []
            for c in concurrency:
                each = max(1, 2000 // c)

                async def caller(
                    n: int = each, core: InferenceCore = core, request: InferRequest = request
                ) -> None:
                    for _ in range(n):
                        await core.infer(request)

                async def burst(c: int = c) -> None:
                    await asyncio.gather(*(caller() for _ in range(c)))

                asyncio.run(burst())  # warm-up
                best = float("inf")
                for _ in range(3):
                    started = time.process_time()
                    asyncio.run(burst())
                    best = min(best, time.process_time() - started)
                cells.append(f"{best / (each * c) * 1e6:.0f}")
            core.close()
            lines.append(f"| {model} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.batching", description=__doc__)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--hgb-repository", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (≤ 10)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "batching")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pronto-batching-"))
    repo = _repository(work, args.model_repository, args.hgb_repository)
    data = {m: _data_file(work, m) for m in MODELS}
    costs = _ort_costs(repo)
    core = _core_costs(repo, args.concurrency)
    print(core)
    runs: list[dict[str, Any]] = []
    for label, size, delay in SETTINGS:
        with _server(repo, args.workers, size, delay, args.out / "server.log") as (proc, addr):
            for model in MODELS:
                for c in args.concurrency:
                    name = f"{model}-b{size}-d{delay}-c{c}"
                    run = GhzRun(
                        address=addr, call=CALL, data_file=data[model], concurrency=c,
                        connections=min(c, 2 * args.workers), duration_s=args.duration,
                    )  # fmt: skip
                    with ProcessSampler([proc.pid]) as sampler:
                        result = run_ghz(run, args.out, name)
                    print(f"{name}: {result.rps:,.0f} RPS, p99 {result.latency_ms.get('p99')} ms")
                    runs.append(
                        {
                            "name": f"{model}, batching {label}, c={c}",
                            "model": model,
                            "batching": label,
                            "concurrency": c,
                            "spec": {"concurrency": c, "duration_s": args.duration},
                            "result": result.as_dict(),
                            "server": sampler.stats.as_dict(),
                            "passed": result.errors == 0,
                            "failures": [] if result.errors == 0 else [f"{result.errors} errors"],
                        }
                    )
    shutil.rmtree(work, ignore_errors=True)
    scenario = {
        "name": "batching",
        "description": (
            "Single-row OIP ModelInfer through ghz to the shared port, "
            f"{args.workers} workers, {args.duration:g} s per run; batching at most 64 rows, "
            "queue delay 0 µs (merge what arrives in the same event-loop turn) or 500 µs."
        ),
    }
    command = "python -m loadtest.batching " + " ".join(argv or sys.argv[1:])
    write_summary(
        scenario, runs, machine_description(), command.strip(), args.out,
        extra={"tables": [_table(runs, args.concurrency), core, costs]},
    )  # fmt: skip
    update_benchmarks_doc()
    return 0 if all(r["passed"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
