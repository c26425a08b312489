"""Test-split metrics: ROC AUC, PR AUC, F1, precision, recall, confusion matrix, calibration."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from trainer.calibration import calibration_check

__all__ = ["compute_metrics", "positive_index"]


def positive_index(classes: list[str]) -> int | None:
    """Column of the positive class: the last (largest) of two classes, None for multiclass."""
    return 1 if len(classes) == 2 else None


def compute_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, labels: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Metrics of predictions on the test split; class values are compared as strings."""
    y = np.asarray(y_true).astype(str)
    pred = np.asarray(labels).astype(str)
    metrics: dict[str, Any] = {
        "rows": len(y),
        "accuracy": float(accuracy_score(y, pred)),
        "log_loss": float(log_loss(y, probabilities, labels=classes)),
        "confusion_matrix": {
            "labels": classes,
            "matrix": confusion_matrix(y, pred, labels=classes).tolist(),  # rows = true class
        },
    }
    pos = positive_index(classes)
    if pos is not None:
        positive = classes[pos]
        score = probabilities[:, pos]
        truth = (y == positive).astype(int)
        prob_true, prob_pred = calibration_curve(truth, score, n_bins=10, strategy="uniform")
        metrics.update(
            positive_class=positive,
            positive_rate=float(truth.mean()),
            roc_auc=float(roc_auc_score(truth, score)),
            pr_auc=float(average_precision_score(truth, score)),
            f1=float(f1_score(y, pred, pos_label=positive, zero_division=0)),
            precision=float(precision_score(y, pred, pos_label=positive, zero_division=0)),
            recall=float(recall_score(y, pred, pos_label=positive, zero_division=0)),
            brier=float(brier_score_loss(truth, score)),
            calibration={
                "mean_predicted": [round(float(v), 6) for v in prob_pred],
                "fraction_positive": [round(float(v), 6) for v in prob_true],
            },
            calibration_check=calibration_check(truth, score),
        )
    else:
        onehot = (y[:, None] == np.asarray(classes)[None, :]).astype(int)
        metrics.update(
            roc_auc=float(roc_auc_score(onehot, probabilities, average="macro")),
            pr_auc=float(average_precision_score(onehot, probabilities, average="macro")),
            f1=float(f1_score(y, pred, average="macro", zero_division=0)),
            precision=float(precision_score(y, pred, average="macro", zero_division=0)),
            recall=float(recall_score(y, pred, average="macro", zero_division=0)),
            averaging="macro (one-vs-rest)",
        )
    return metrics
