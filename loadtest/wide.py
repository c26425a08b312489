"""A wide numeric model called per column and packed: single-row req/s with h2load.

    python -m loadtest.wide [--rounds 3] [--seconds 2] [--workers 2]

Trains a real tabular data set with 30 numeric columns (scikit-learn's breast cancer
data, 569 rows, shipped with scikit-learn) twice with ``pronto train``: with one
``[N, 1]`` FP32 input per column (the default) and with ``--numeric-input packed`` (one
``[N, 30]`` FP32 input). One ``pronto serve`` serves both; the bare grpc.aio floor of
``loadtest.compare.bare_server`` runs next to it. Each request body is what a
tritonclient user builds after reading ``ModelMetadata``: one tensor per listed input,
data in ``raw_input_contents`` (the packed columns in the order of the input's
``columns`` parameter), the ``probabilities`` output asked by name. h2load sends the
per-column body, the packed body and the packed body to the floor in alternating rounds,
so a busy machine hits all three alike; the figures that mean something are the
per-round ratios. Then, in this process and without gRPC, the same two bodies go through
the server's request path (parse, decode, validate, run, encode) and ONNX Runtime alone,
timed in process CPU time, variants alternating, best of the rounds. With
``--profile SECONDS``, py-spy then samples one worker (GIL-holding samples only, as
``loadtest.profile`` does) while h2load sends the packed body, to show where a packed
request's time goes. Writes ``summary.json`` and h2load's reports under ``--out`` and
prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from pronto_contract import version_dir

__all__ = ["bench", "build_bodies", "in_process_costs", "main", "report", "train_models"]

CSV_NAME = "breast_cancer.csv"
MODELS = {"wide-columns": "per-column", "wide-packed": "packed"}
TARGET_VS_FLOOR = 0.70  # packed single-row requests/s against the bare grpc.aio floor


def train_models(root: Path) -> Path:
    """The two models of the same data in a fresh repository under ``root``."""
    from sklearn.datasets import load_breast_cancer

    from trainer.settings import TrainSettings
    from trainer.train import train

    csv = root / CSV_NAME
    load_breast_cancer(as_frame=True).frame.to_csv(csv, index=False)
    repo = root / "models"
    for name, mode in MODELS.items():
        settings = TrainSettings(
            data=csv,
            target="target",
            name=name,
            model_repository=repo,
            numeric_input=mode,  # type: ignore[arg-type]
        )
        train(settings, log=lambda _: None)
    return repo


def _request_from_metadata(meta: Any, row: dict[str, float]) -> Any:
    """A ModelInferRequest the way tritonclient builds it from ``ModelMetadata``."""
    import numpy as np

    from server.generated.inference import grpc_service_pb2 as pb

    req = pb.ModelInferRequest(model_name=meta.name)
    for inp in meta.inputs:
        if "columns" in inp.parameters:
            columns = json.loads(inp.parameters["columns"].string_param)
            values = np.array([[row[c] for c in columns]], dtype="<f4")
        else:
            values = np.array([[row[inp.name]]], dtype="<f4")
        req.inputs.add(name=inp.name, datatype=inp.datatype, shape=list(values.shape))
        req.raw_input_contents.append(values.tobytes())
    req.outputs.add(name="probabilities")
    return req


def build_bodies(address: str, csv: Path, out_dir: Path) -> dict[str, Path]:
    """One framed single-row body per model, from the server's own ModelMetadata."""
    import grpc
    import pandas as pd

    from loadtest.h2load import write_request
    from server.generated.inference import grpc_service_pb2 as pb
    from server.generated.inference import grpc_service_pb2_grpc as pb_grpc
    from trainer.data import input_names

    frame = pd.read_csv(csv).drop(columns="target")
    names = input_names(list(frame.columns))
    row = {names[c]: float(v) for c, v in frame.iloc[7].items()}
    bodies = {}
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for name in MODELS:
            meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=10)
            req = _request_from_metadata(meta, row)
            bodies[name] = write_request(req, out_dir / f"{name}.grpc")
    return bodies


def in_process_costs(repo: Path, bodies: dict[str, Path], rounds: int = 7) -> dict[str, Any]:
    """µs of process CPU per single-row request through the server's request path (no
    gRPC), and per ONNX Runtime run alone, for each model's body."""
    import asyncio
    import time
    import timeit

    from server.core import InferenceCore
    from server.model import load_model
    from server.oip_codec import InferWire, decode_infer, encode_infer_response
    from server.repository import Registry

    handles = [load_model(name, 1, version_dir(repo, name, 1)) for name in MODELS]
    registry = Registry()
    registry.replace(handles)
    core = InferenceCore(registry)
    core.ready = True
    loop = asyncio.new_event_loop()
    cases: dict[str, Any] = {}
    for handle in handles:
        data = bodies[handle.name].read_bytes()[5:]

        def path(data: bytes = data) -> bytes:  # as served: from the wire bytes
            request = decode_infer(InferWire(data), 1 << 24, 1 << 20)
            response = loop.run_until_complete(core.infer(request))
            return encode_infer_response(response).SerializeToString()  # type: ignore[no-any-return]

        decoded = decode_infer(InferWire(data), 1 << 24, 1 << 20)
        feeds = core._feeds(handle, decoded)
        cases[f"{handle.name} request path"] = path
        cases[f"{handle.name} ONNX Runtime"] = lambda h=handle, f=feeds: h.run(f, ["probabilities"])
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, fn in cases.items():
            t = timeit.timeit(fn, number=300, timer=time.process_time) / 300
            best[name] = min(best[name], t)
    loop.close()
    return {name: round(t * 1e6, 1) for name, t in best.items()}


def _table(summary: dict[str, Any]) -> str:
    lines = [
        "| round | per-column req/s | packed req/s | floor req/s | packed / per-column "
        "| packed / floor | per-column / floor |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rps = summary["rps"]
    for i in range(summary["rounds"]):
        cols, packed, floor = (rps[k][i] for k in ("wide-columns", "wide-packed", "floor"))
        lines.append(
            f"| {i + 1} | {cols:,.0f} | {packed:,.0f} | {floor:,.0f} | {packed / cols:.2f} "
            f"| {packed / floor:.2f} | {cols / floor:.2f} |"
        )
    med = summary["median"]
    lines.append(
        f"| median | | | | {med['packed_vs_columns']:.2f} | {med['packed_vs_floor']:.2f} "
        f"| {med['columns_vs_floor']:.2f} |"
    )
    lines += ["", "| in process, no gRPC | µs per single-row request |", "| --- | ---: |"]
    lines += [f"| {name} | {us} |" for name, us in summary["in_process_us"].items()]
    if summary["profile"]:
        lines += [
            "",
            "| frame (packed, one worker) | own % | inclusive % |",
            "| --- | ---: | ---: |",
        ]
        lines += [f"| `{f[:90]}` | {o}% | {i}% |" for f, o, i in summary["profile"]]
    return "\n".join(lines)


def _profile(stack: Any, body: Path, seconds: int, out_dir: Path) -> list[list[Any]]:
    """Top frames of one worker while h2load sends ``body``: [frame, own %, inclusive %]."""
    import subprocess
    import threading
    import time

    import psutil

    from loadtest.h2load import H2loadRun, run_h2load
    from loadtest.profile import top_frames
    from server.template import worker_processes

    h2 = H2loadRun(address=stack.grpc, body=body, duration_s=seconds + 4, warmup_s=0.5)
    load = threading.Thread(target=run_h2load, args=(h2, out_dir, "profile-load"))
    load.start()
    # h2load's connections land on workers by the kernel's choice: sample the busiest
    workers = worker_processes(psutil.Process(stack.server_pids[0]))
    for w in workers:
        w.cpu_percent()
    time.sleep(1.5)
    worker = max(workers, key=lambda w: w.cpu_percent()).pid
    collapsed = out_dir / "worker-wide-packed.txt"
    spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(worker), "--gil"]
    spy += ["--duration", str(seconds), "--rate", "500", "--format", "raw"]
    proc = subprocess.run([*spy, "--output", str(collapsed)], capture_output=True, text=True)
    load.join()
    if proc.returncode != 0:
        raise RuntimeError(f"py-spy failed: {proc.stderr.strip()[-1000:]}")
    rows, total = top_frames(collapsed)
    return [[f, round(100 * o / total, 1), round(100 * i / total, 1)] for f, o, i in rows]


def run(
    rounds: int, seconds: float, workers: int, out_dir: Path, profile_s: int = 0
) -> dict[str, Any]:
    from loadtest.compare.run import bare_floor
    from loadtest.h2load import H2loadRun, check_request, run_h2load
    from loadtest.stack import local_stack

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pronto-wide-") as tmp:
        repo = train_models(Path(tmp))
        with (
            local_stack(repo, workers, False, out_dir / "logs") as stack,
            bare_floor(workers, out_dir / "logs" / "bare.log") as (bare, _),
        ):
            bodies = build_bodies(stack.grpc, Path(tmp) / CSV_NAME, out_dir)
            targets = {
                "wide-columns": (stack.grpc, bodies["wide-columns"]),
                "wide-packed": (stack.grpc, bodies["wide-packed"]),
                "floor": (bare, bodies["wide-packed"]),
            }
            for address, body in targets.values():
                check_request(address, body)
            rps: dict[str, list[float]] = {name: [] for name in targets}
            errors = 0
            for i in range(rounds):
                for name, (address, body) in targets.items():
                    h2 = H2loadRun(address=address, body=body, duration_s=seconds, warmup_s=0.5)
                    result = run_h2load(h2, out_dir, f"{name}-{i}")
                    rps[name].append(result.rps)
                    errors += result.errors
            profile = (
                _profile(stack, bodies["wide-packed"], profile_s, out_dir) if profile_s else []
            )
        in_process = in_process_costs(repo, bodies)
    cols, packed, floor = rps["wide-columns"], rps["wide-packed"], rps["floor"]
    summary = {
        "rounds": rounds,
        "seconds": seconds,
        "workers": workers,
        "errors": errors,
        "rps": rps,
        "in_process_us": in_process,
        "profile": profile,
        "median": {
            "packed_vs_columns": statistics.median(
                p / c for p, c in zip(packed, cols, strict=True)
            ),
            "packed_vs_floor": statistics.median(p / f for p, f in zip(packed, floor, strict=True)),
            "columns_vs_floor": statistics.median(c / f for c, f in zip(cols, floor, strict=True)),
        },
    }
    return summary


def report(summary: dict[str, Any], command: str, out_dir: Path) -> bool:
    """``summary.json`` in the form of ``pronto bench`` (tables for docs/benchmarks.md);
    whether the packed model met its target against the floor, without errors."""
    from loadtest.report import write_study

    ratio = summary["median"]["packed_vs_floor"]
    passed = not summary["errors"] and ratio >= TARGET_VS_FLOOR
    description = (
        "A 30-feature numeric model (scikit-learn's breast cancer data) trained per column and "
        "packed, single-row requests as a tritonclient user builds them from ModelMetadata, "
        "against the bare grpc.aio floor; h2load, alternating rounds. Target: packed at least "
        f"{TARGET_VS_FLOOR:.2f}× the floor (median of the per-round ratios: {ratio:.2f}, "
        f"{'met' if passed else 'missed'})."
    )
    write_study("wide", description, passed, [_table(summary)], summary, command, out_dir)
    return passed


def bench(results_dir: Path, workers: int = 2) -> bool:
    """The ``wide`` scenario of ``pronto bench``."""
    summary = run(3, 3.0, workers, results_dir / "wide", profile_s=6)
    print(_table(summary))
    return report(summary, "pronto bench wide", results_dir / "wide")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.wide", description=__doc__.split("\n\n")[2] if __doc__ else ""
    )
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds.")
    parser.add_argument("--seconds", type=float, default=2.0, help="h2load seconds per run.")
    parser.add_argument("--workers", type=int, default=2, help="Server (and floor) processes.")
    parser.add_argument(
        "--out", type=Path, default=Path("loadtest/results/wide"), help="Results folder."
    )
    parser.add_argument(
        "--profile", type=int, default=0, metavar="SECONDS", help="py-spy a worker this long."
    )
    args = parser.parse_args(argv)
    summary = run(args.rounds, args.seconds, args.workers, args.out, args.profile)
    print(_table(summary))
    report(summary, " ".join(["python -m loadtest.wide", *(argv or sys.argv[1:])]), args.out)
    if summary["errors"]:
        print(f"{summary['errors']} h2load errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
