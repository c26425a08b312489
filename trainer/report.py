"""``metrics.json``, PNG plots and a markdown report ready to post as a CML comment.

The markdown links the plots by relative path (``plots/roc.png``), which is what
``cml comment create report.md`` uploads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI runners and servers have no display

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

__all__ = ["PLOTS", "write_report"]

PLOTS = ["confusion_matrix.png", "roc.png", "pr.png", "calibration.png"]


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    # A fixed creation date keeps PNG bytes identical across runs of the same model (DVC).
    fig.savefig(path, dpi=80, metadata={"Software": None, "CreationDate": None})
    plt.close(fig)


def _confusion(metrics: dict[str, Any], path: Path) -> None:
    matrix = np.array(metrics["confusion_matrix"]["matrix"])
    labels = metrics["confusion_matrix"]["labels"]
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(labels)
    ax.set_yticklabels(labels)
    for (i, j), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        ax.text(j, i, str(value), ha="center", va="center", color=colour)
    ax.set_title("Confusion matrix (test)")
    _save(fig, path)


def _curves(truth: np.ndarray, probabilities: np.ndarray, classes: list[str], out: Path) -> None:
    # Binary: the positive class; multiclass: one curve per class (one-vs-rest).
    shown = [1] if len(classes) == 2 else list(range(len(classes)))
    roc, roc_ax = plt.subplots(figsize=(4, 3.5))
    pr, pr_ax = plt.subplots(figsize=(4, 3.5))
    for k in shown:
        positive = (truth == classes[k]).astype(int)
        fpr, tpr, _ = roc_curve(positive, probabilities[:, k])
        precision, recall, _ = precision_recall_curve(positive, probabilities[:, k])
        roc_ax.plot(fpr, tpr, label=f"class {classes[k]}")
        pr_ax.plot(recall, precision, label=f"class {classes[k]}")
    roc_ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
    roc_ax.legend(loc="lower right")
    pr_ax.legend(loc="upper right")
    _save(roc, out / "roc.png")
    _save(pr, out / "pr.png")


def _calibration(metrics: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    cal = metrics.get("calibration")
    if cal:
        ax.plot(cal["mean_predicted"], cal["fraction_positive"], "o-")
    else:
        ax.text(0.5, 0.5, "binary models only", ha="center")
    ax.set(xlabel="mean predicted probability", ylabel="fraction positive", title="Calibration")
    _save(fig, path)


def _markdown(manifest: dict[str, Any]) -> str:
    m = manifest["metrics"]
    parity = manifest["parity"]
    rows = [
        ("ROC AUC", m["roc_auc"]),
        ("PR AUC", m["pr_auc"]),
        ("F1", m["f1"]),
        ("precision", m["precision"]),
        ("recall", m["recall"]),
        ("accuracy", m["accuracy"]),
        ("log loss", m["log_loss"]),
    ]
    if "brier" in m:
        rows.append(("Brier score", m["brier"]))
    scope = f"positive class `{m['positive_class']}`" if "positive_class" in m else m["averaging"]
    lines = [
        f"## Model `{manifest['name']}` "
        + (f"version {manifest['version']}" if manifest["version"] else "(unpublished build)"),
        "",
        f"Data `{manifest['data']['path']}` ({manifest['data']['rows']} rows, sha256 "
        f"`{manifest['data']['sha256'][:12]}`), estimator `{manifest['params']['estimator']}`, "
        f"code `{manifest['code_version']}`. Test split: {m['rows']} rows; {scope}.",
        "",
        "| metric | value |",
        "| --- | --- |",
        *[f"| {name} | {value:.4f} |" for name, value in rows],
        "",
        f"ONNX parity: **{'passed' if parity['passed'] else 'FAILED'}** "
        f"(max |Δp| = {parity['max_abs_diff']:.2e} on {parity['rows']} rows, labels "
        f"{'equal' if parity['labels_equal'] else 'differ'}).",
        "",
        "![confusion matrix](plots/confusion_matrix.png) ![ROC](plots/roc.png) "
        "![precision-recall](plots/pr.png) ![calibration](plots/calibration.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(
    out: Path,
    manifest: dict[str, Any],
    y_true: np.ndarray,
    probabilities: np.ndarray,
) -> None:
    """Write ``metrics.json``, ``report.md`` and ``plots/*.png`` into ``out``."""
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    metrics = manifest["metrics"]
    classes = manifest["signature"]["classes"]
    _confusion(metrics, plots / "confusion_matrix.png")
    _curves(np.asarray(y_true).astype(str), probabilities, classes, plots)
    _calibration(metrics, plots / "calibration.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(manifest))
