"""``python -m trainer evaluate``: score a model folder's ONNX graph on its test split.

The DVC pipeline's last stage. It re-creates the seeded split from the data and the params in
``model.json``, runs the *ONNX* model (what the server runs) and writes ``metrics.json``,
``report.md`` and ``plots/`` into a reports folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["evaluate_model", "register"]


def evaluate_model(model_dir: Path, data: Path, out: Path) -> dict[str, Any]:
    """Evaluate ``model_dir/model.onnx`` on the test split of ``data``; returns the metrics."""
    from pronto_contract import MODEL_FILE, read_manifest
    from trainer.data import load_dataset, sha256_file
    from trainer.errors import DataError
    from trainer.metrics import compute_metrics
    from trainer.model import Split
    from trainer.onnx_export import run_onnx
    from trainer.report import write_report

    typed = read_manifest(model_dir)
    manifest = typed.model_dump(mode="json")
    params = typed.params
    if params["data_kind"] == "flights":
        dataset = load_dataset(data)
    else:
        dataset = load_dataset(data, params["target"], params["categorical"], params["numeric"])
    if sha256_file(data) != typed.data.get("sha256"):
        raise DataError(f"{data} is not the file {typed.name} was trained on (sha256 differs)")
    split = Split(dataset, params["test_size"], params["seed"])
    labels, probabilities = run_onnx(
        (model_dir / MODEL_FILE).read_bytes(),
        split.X_test,
        dataset.categorical,
        dataset.numeric,
        next(iter(typed.signature.packed), None),
    )
    classes = typed.signature.classes or []
    manifest["metrics"] = compute_metrics(split.y_test.to_numpy(), probabilities, labels, classes)
    out.mkdir(parents=True, exist_ok=True)
    write_report(out, manifest, split.y_test.to_numpy(), probabilities)
    return dict(manifest["metrics"])


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("evaluate", help="Evaluate a model folder's ONNX graph.")
    parser.add_argument("--model", type=Path, required=True, help="folder with model.onnx/json")
    parser.add_argument("--data", type=Path, required=True, help="the CSV it was trained on")
    parser.add_argument("--out", type=Path, required=True, help="reports folder to write")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from trainer.errors import TrainerError

    try:
        metrics = evaluate_model(args.model, args.data, args.out)
    except TrainerError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}/metrics.json: ROC AUC {metrics['roc_auc']:.4f}")
    return 0
