"""Labels per second through Envoy's REST feedback route, on a real server with capture on.

Serves a model with ``--capture-sample-rate 1`` behind ``pronto gateway``, makes predictions
over gRPC, then posts their labels to ``POST /v1/models/{name}:feedback`` from one
keep-alive connection for a fixed time, with a given number of predictions per request.

    python -m loadtest.monitor.feedback_rate --models <repo> --seconds 8
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["feedback_rate"]


def feedback_rate(
    repo: Path, model: str, seconds: float, batches: tuple[int, ...], predictions: int
) -> dict[str, Any]:
    import grpc

    from loadtest.stack import _stop, _wait_http, free_port, port_block, wait_healthy
    from server.generated.pronto.v1 import prediction_pb2 as ppb
    from server.generated.pronto.v1 import prediction_pb2_grpc as ppb_grpc

    bodies = json.loads(Path("loadtest/data/predict.json").read_text())
    port, base, listen, admin, stats = free_port(), port_block(2), *[free_port() for _ in range(3)]
    procs = []
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        serve = [
            sys.executable, "-m", "server.cli", "serve", "--model-repository", str(repo),
            "--workers", "2", "--host", "127.0.0.1", "--port", str(port),
            "--worker-base-port", str(base), "--metrics-port", "0",
            "--capture-dir", str(Path(tmp) / "capture"), "--capture-sample-rate", "1",
            "--capture-flush-interval", "0.2", "--log-level", "WARNING",
        ]  # fmt: skip
        gateway = [
            sys.executable, "-m", "server.cli", "gateway", "--listen-address", "127.0.0.1",
            "--listen-port", str(listen), "--admin-port", str(admin), "--stats-port", str(stats),
            "--workers", "2", "--worker-base-port", str(base), "--no-require-auth",
            "--envoy-log-level", "error",
        ]  # fmt: skip
        try:
            procs.append(subprocess.Popen(serve))
            wait_healthy(f"127.0.0.1:{port}", proc=procs[0])
            procs.append(subprocess.Popen(gateway))
            _wait_http(listen, "/v2/health/ready")
            ids: list[tuple[str, str]] = []
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                predict = ppb_grpc.PredictionServiceStub(channel).Predict
                for i in range(predictions):
                    req = ppb.PredictRequest(name=model)
                    req.instances.add().update(bodies[i % len(bodies)]["instances"][0])
                    reply = predict(req, timeout=10)
                    ids.append((reply.id, reply.predictions[0].label))
            time.sleep(0.5)  # two capture flushes: every prediction is in the index
            conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=30)
            for batch in batches:
                bodies_out = [
                    json.dumps(
                        {
                            "feedback": [
                                {"id": pid, "labels": [label]}
                                for pid, label in ids[start : start + batch]
                            ]
                        }
                    )
                    for start in range(0, len(ids) - batch + 1, batch)
                ]
                path = f"/v1/models/{model}:feedback"
                headers = {"content-type": "application/json"}
                sent = labels = errors = 0
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    conn.request("POST", path, bodies_out[sent % len(bodies_out)], headers)
                    reply = conn.getresponse()
                    reply.read()
                    sent += 1
                    if reply.status == 200:
                        labels += batch
                    else:
                        errors += 1
                elapsed = time.perf_counter() - t0
                out[f"batch_{batch}"] = {
                    "requests_per_s": round(sent / elapsed, 1),
                    "labels_per_s": round(labels / elapsed, 1),
                    "errors": errors,
                }
            conn.close()
        finally:
            for proc in reversed(procs):
                with contextlib.suppress(Exception):
                    _stop(proc)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--model", default="flight-delay")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--predictions", type=int, default=2000)
    parser.add_argument("--batches", default="1,100", help="predictions per feedback request")
    args = parser.parse_args(argv)
    batches = tuple(int(b) for b in args.batches.split(","))
    result = feedback_rate(args.models, args.model, args.seconds, batches, args.predictions)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
