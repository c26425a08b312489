"""A real run of the quality loop, plotted: realized vs estimated quality under drift.

Trains the flight-delay model on generated data, serves it with payload capture on, and
streams generated flights through ``Predict``: first normal traffic, then the generator's
drift mode. The true labels (the generator's delays) are sent back through
``FeedbackService`` a fixed number of batches late, as labels are in practice. After every
batch the supervisor's ``/metrics`` is read; the plot shows ``pronto_model_quality`` from
labels and estimated from scores, against rows served.

    python -m loadtest.monitor.quality_run --out loadtest/results/quality
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

__all__ = ["main", "run"]

MODEL = "flight-delay"
METRICS = ("accuracy", "f1", "roc_auc")


def _scrape(address: str) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.labels["source"], s.labels["metric"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "pronto_model_quality" and s.labels.get("model") == MODEL
    }


def run(
    workdir: Path, batches: int, batch: int, label_delay: int, window: int, class_weight: str
) -> dict[str, Any]:
    import grpc

    from pronto_cli.procs import PRONTO, free_port, port_block, stop_process, wait_for_grpc_health
    from pronto_contract import latest_manifest
    from server.generated.pronto.v1 import feedback_pb2 as fpb
    from server.generated.pronto.v1 import feedback_pb2_grpc as fpb_grpc
    from server.generated.pronto.v1 import prediction_pb2 as ppb
    from server.generated.pronto.v1 import prediction_pb2_grpc as ppb_grpc
    from trainer.features import flight_features, flight_target
    from trainer.flights import generate_flights

    py = [sys.executable, "-m"]
    data, repo = workdir / "flights.csv", workdir / "models"
    subprocess.run([*py, "trainer", "generate", "--out", str(data), "--rows", "20000"], check=True)
    subprocess.run(
        [
            *PRONTO,
            "train",
            "--data",
            str(data),
            "--model-repository",
            str(repo),
            "--class-weight",
            class_weight,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    metrics_ref = latest_manifest(repo, MODEL).metrics.model_dump()
    port, metrics, base = free_port(), free_port(), port_block(2)
    cmd = [
        *PRONTO, "serve", "--model-repository", str(repo), "--workers", "2",
        "--host", "127.0.0.1", "--port", str(port), "--worker-base-port", str(base),
        "--metrics-port", str(metrics), "--capture-dir", str(workdir / "capture"),
        "--capture-sample-rate", "1",
        "--capture-flush-interval", "0.2", "--quality-refresh-seconds", "0",
        "--quality-window-rows", str(window), "--log-level", "WARNING",
    ]  # fmt: skip
    half = batches // 2
    normal = generate_flights(half * batch, seed=7)
    drifted = generate_flights((batches - half) * batch, seed=8, drift=True)
    frames = [
        (flight_features(f), flight_target(f).astype(int).astype(str)) for f in (normal, drifted)
    ]
    points: list[dict[str, Any]] = []
    server = subprocess.Popen(cmd)
    try:
        wait_for_grpc_health(f"127.0.0.1:{port}", timeout=90, proc=server)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            predict = ppb_grpc.PredictionServiceStub(channel).Predict
            feedback = fpb_grpc.FeedbackServiceStub(channel).Feedback
            pending: deque[fpb.LabeledPrediction] = deque()
            for step in range(batches):
                features, target = frames[0] if step < half else frames[1]
                i = (step if step < half else step - half) * batch
                request = ppb.PredictRequest(name=MODEL)
                for row in features.iloc[i : i + batch].to_dict("records"):
                    request.instances.add().update(row)
                reply = predict(request, timeout=10)
                pending.append(
                    fpb.LabeledPrediction(id=reply.id, labels=target.iloc[i : i + batch].tolist())
                )
                if len(pending) > label_delay:
                    feedback(
                        fpb.FeedbackRequest(name=MODEL, feedback=[pending.popleft()]),
                        timeout=10,
                    )
                # the index receives the batch on the capture writer's next flush
                quality = _scrape(f"127.0.0.1:{metrics}")
                points.append(
                    {"rows": (step + 1) * batch, **{f"{s}/{m}": v for (s, m), v in quality.items()}}
                )
    finally:
        stop_process(server)
    reference = {m: metrics_ref.get(m) for m in METRICS}
    return {
        "points": points,
        "drift_at_rows": half * batch,
        "label_delay_rows": label_delay * batch,
        "window_rows": window,
        "reference": reference,
        "calibration": metrics_ref.get("calibration_check"),
        "class_weight": class_weight,
    }


def render(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(13, 3.8), dpi=100, sharex=True)
    points = result["points"]
    for ax, metric in zip(axes, METRICS, strict=True):
        for source, style in (("labels", "-"), ("estimated", "--")):
            xs = [p["rows"] for p in points if f"{source}/{metric}" in p]
            ys = [p[f"{source}/{metric}"] for p in points if f"{source}/{metric}" in p]
            ax.plot(xs, ys, style, label=source)
        ref = result["reference"].get(metric)
        if ref is not None:
            ax.axhline(ref, color="grey", lw=0.8, ls=":", label="test split")
        ax.axvline(result["drift_at_rows"], color="red", lw=0.8)
        ax.set_title(metric)
        ax.set_xlabel("rows served")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(
        "pronto_model_quality: labels vs estimated (drifted traffic from the red line, "
        f"labels {result['label_delay_rows']} rows late, window {result['window_rows']} rows, "
        f"calibration ECE {result['calibration']['ece']:.3f})",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("loadtest/results/quality"))
    parser.add_argument("--batches", type=int, default=160)
    parser.add_argument("--batch", type=int, default=50, help="rows per Predict call")
    parser.add_argument("--label-delay", type=int, default=20, help="batches before labels")
    parser.add_argument("--window", type=int, default=1500, help="--quality-window-rows")
    parser.add_argument(
        "--class-weight", default="none", help="pronto train --class-weight (none: calibrated)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(
            Path(tmp), args.batches, args.batch, args.label_delay, args.window, args.class_weight
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(result, indent=1) + "\n")
    print(render(result, args.out / "quality.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
