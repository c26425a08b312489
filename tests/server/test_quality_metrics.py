"""Live-quality arithmetic equals scikit-learn's metrics on the same rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from server.quality import binary_metrics, estimated_metrics

POS, NEG = "1", "0"


def _rows(n: int, seed: int, ties: bool) -> list[tuple[str, float, str]]:
    rng = np.random.default_rng(seed)
    score = rng.random(n)
    if ties:  # coarse scores: many equal values, as from a tree model
        score = np.round(score, 1)
    truth = rng.random(n) < score * 0.8 + 0.1
    predicted = score >= 0.5
    return [
        (POS if p else NEG, float(s), POS if t else NEG)
        for p, s, t in zip(predicted, score, truth, strict=True)
    ]


def _sklearn(rows: list[tuple[str, float, str]], weights: np.ndarray | None = None) -> dict:
    pred = [r[0] for r in rows]
    score = [r[1] for r in rows]
    y = [r[2] for r in rows]
    kw = {"sample_weight": weights}
    truth = [1 if v == POS else 0 for v in y]
    return {
        "accuracy": accuracy_score(y, pred, **kw),
        "precision": precision_score(y, pred, pos_label=POS, zero_division=0, **kw),
        "recall": recall_score(y, pred, pos_label=POS, zero_division=0, **kw),
        "f1": f1_score(y, pred, pos_label=POS, zero_division=0, **kw),
        "roc_auc": roc_auc_score(truth, score, **kw),
    }


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_realized_metrics_equal_sklearn(seed: int, ties: bool) -> None:
    rows = _rows(500, seed, ties)
    ours = binary_metrics(rows, POS)
    assert ours == pytest.approx(_sklearn(rows), abs=1e-12)


def test_realized_without_one_class_has_no_auc_and_zero_division() -> None:
    rows = [(NEG, 0.2, NEG), (NEG, 0.3, NEG)]
    ours = binary_metrics(rows, POS)
    assert "roc_auc" not in ours
    assert ours == {"accuracy": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}


@pytest.mark.parametrize("ties", [False, True])
def test_estimated_metrics_equal_weighted_sklearn(ties: bool) -> None:
    """Each row counts as a positive with weight p and a negative with weight 1 - p."""
    served = [(p, s) for p, s, _ in _rows(400, 7, ties)]
    expanded = [(p, s, POS) for p, s in served] + [(p, s, NEG) for p, s in served]
    weights = np.array([s for _, s in served] + [1 - s for _, s in served])
    ours = estimated_metrics(served, POS)
    assert ours == pytest.approx(_sklearn(expanded, weights), abs=1e-12)


def test_estimated_matches_realized_on_calibrated_labels() -> None:
    """Labels drawn from calibrated scores: the estimate lands near the realized value."""
    rng = np.random.default_rng(3)
    score = rng.beta(2, 5, 20_000)
    truth = rng.random(score.size) < score
    rows = [
        (POS if s >= 0.5 else NEG, float(s), POS if t else NEG)
        for s, t in zip(score, truth, strict=True)
    ]
    realized = binary_metrics(rows, POS)
    estimated = estimated_metrics([(p, s) for p, s, _ in rows], POS)
    for metric in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert estimated[metric] == pytest.approx(realized[metric], abs=0.02), metric
