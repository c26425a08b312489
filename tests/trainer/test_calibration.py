"""The calibration check the trainer records for estimated quality."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from trainer.calibration import calibration_check


def test_calibrated_scores_pass_and_shifted_scores_fail() -> None:
    rng = np.random.default_rng(0)
    score = rng.random(50_000)
    truth = (rng.random(score.size) < score).astype(int)
    good = calibration_check(truth, score)
    assert good["calibrated"] and good["ece"] < 0.01
    bad = calibration_check(truth, np.clip(score + 0.2, 0, 1))
    assert not bad["calibrated"] and bad["ece"] > 0.1


def test_gaps_agree_with_sklearn_calibration_curve() -> None:
    rng = np.random.default_rng(1)
    score = rng.beta(2, 5, 5_000)
    truth = (rng.random(score.size) < score**0.8).astype(int)
    prob_true, prob_pred = calibration_curve(truth, score, n_bins=10, strategy="uniform")
    assert calibration_check(truth, score)["max_gap"] == pytest.approx(
        float(np.abs(prob_true - prob_pred).max())
    )
