"""Calibration check recorded in the manifest.

The server's estimated quality (``pronto_model_quality{source="estimated"}``) treats a
positive-class probability *p* as "positive with probability *p*", which holds only for a
calibrated model. The trainer measures how far that is from the truth on the test split:
the expected calibration error (ECE: the row-weighted mean gap between the mean predicted
probability and the observed positive rate over equal-width bins) and the largest such gap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ECE_THRESHOLD", "calibration_check"]

#: above this ECE, estimated quality is flagged as unreliable
ECE_THRESHOLD = 0.05


def calibration_check(
    truth: np.ndarray, score: np.ndarray, bins: int = 10, threshold: float = ECE_THRESHOLD
) -> dict[str, Any]:
    """ECE and largest bin gap of positive-class scores against 0/1 outcomes."""
    truth = np.asarray(truth, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    # bin i holds scores in [i/bins, (i+1)/bins); a score of exactly 1 joins the last bin
    which = np.minimum((score * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    mean_score = np.bincount(which, weights=score, minlength=bins)
    positives = np.bincount(which, weights=truth, minlength=bins)
    used = count > 0
    gaps = np.abs(mean_score[used] - positives[used]) / count[used]
    ece = float((gaps * count[used]).sum() / max(1, len(score)))
    return {
        "bins": bins,
        "ece": ece,
        "max_gap": float(gaps.max()) if gaps.size else 0.0,
        "threshold": threshold,
        "calibrated": ece <= threshold,
    }
