"""What a rollout costs the caller: single-row Predict throughput with no rollout, shadow
at 100% sampling and canary at 50%, side by side in alternating rounds on one server.

    python -m loadtest.rollout_cost --model-repository models --model flight-delay \\
        --candidate 2 --seconds 5 --rounds 2

The candidate must be a version folder of the model (a copy of stable will do). The
model's ``rollout.json`` is replaced during the run and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from loadtest.ghz import find_tool
from server.generated.pronto.v1 import prediction_pb2 as ppb
from server.generated.pronto.v1 import prediction_pb2_grpc as ppb_grpc
from server.rollout_state import Mode, start, state_path

ROOT = Path(__file__).resolve().parents[1]
PROTOSET = ROOT / "gateway" / "generated" / "pronto.pb"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _instance(address: str, model: str) -> dict[str, Any]:
    with grpc.insecure_channel(address) as channel:
        info = ppb_grpc.PredictionServiceStub(channel).GetModel(
            ppb.GetModelRequest(name=model), timeout=10
        )
    return {
        f.name: (f.categories[0] if f.categories else 1.0) if f.kind == "categorical" else 1.0
        for f in info.model.features
    }


def _wait_versions(address: str, model: str, want: set[str], timeout: float = 30) -> None:
    """Until unversioned requests are answered by exactly ``want`` (ids vary the hash)."""
    deadline = time.monotonic() + timeout
    instance = _instance(address, model)
    with grpc.insecure_channel(address) as channel:
        stub = ppb_grpc.PredictionServiceStub(channel)
        while time.monotonic() < deadline:
            seen = set()
            for i in range(64):
                request = ppb.PredictRequest(name=model, id=f"w-{time.monotonic_ns()}-{i}")
                request.instances.add().update(instance)
                seen.add(stub.Predict(request, timeout=5).model_version)
            if seen == want:
                return
            time.sleep(0.1)
    raise TimeoutError(f"versions {want} not reached")


def _ghz(address: str, model: str, instance: dict[str, Any], seconds: float) -> float:
    cmd = [
        find_tool("ghz"), "--insecure", "--protoset", str(PROTOSET),
        "--call", "pronto.v1.PredictionService/Predict", "-c", "16", "--connections", "2",
        "-z", f"{seconds}s", "-O", "json",
        "-d", json.dumps({"name": model, "instances": [instance]}), address,
    ]  # fmt: skip
    report = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return float(report["rps"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--candidate", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    root, model = args.model_repository, args.model
    state_path(root, model).unlink(missing_ok=True)
    port = _free_port()
    cmd = [
        sys.executable, "-m", "pronto_cli", "serve", "--model-repository", str(root),
        "--models", model, "--workers", "1", "--host", "127.0.0.1",
        "--port", str(port), "--worker-base-port", "0", "--metrics-port", str(_free_port()),
        "--model-poll-interval", "0.2", "--log-level", "WARNING",
    ]  # fmt: skip
    server = subprocess.Popen(cmd, cwd=ROOT)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                instance = _instance(address, model)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        results: dict[str, list[float]] = {"none": [], "shadow 100%": [], "canary 50%": []}
        for _ in range(args.rounds):
            for variant in results:
                state_path(root, model).unlink(missing_ok=True)
                if variant.startswith("shadow"):
                    start(root, model, args.candidate, Mode.SHADOW)
                elif variant.startswith("canary"):
                    state = start(root, model, args.candidate, Mode.CANARY, weight=50)
                    _wait_versions(address, model, {str(state.stable), str(args.candidate)})
                time.sleep(0.5)  # shadow and none: two reload passes of the worker
                results[variant].append(_ghz(address, model, instance, args.seconds))
        base = statistics.mean(results["none"])
        print("| variant | single-row Predict rps (per round) | mean | vs none |")
        print("| --- | --- | --- | --- |")
        for variant, values in results.items():
            mean = statistics.mean(values)
            rounds = ", ".join(f"{v:.0f}" for v in values)
            print(f"| {variant} | {rounds} | {mean:.0f} | {100 * (mean / base - 1):+.1f}% |")
    finally:
        state_path(root, model).unlink(missing_ok=True)
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
