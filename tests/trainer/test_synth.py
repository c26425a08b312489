"""`pronto synth`: Gaussian-copula synthetic rows keep marginals and dependence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainer.copula import GaussianCopula, column_stats
from trainer.features import flight_features, flight_target
from trainer.flights import generate_flights

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    raw = generate_flights(4000, seed=3)
    frame = flight_features(raw)
    frame["delay_15"] = flight_target(raw).astype(int)
    return frame


def test_marginals_and_types_are_kept(real: pd.DataFrame) -> None:
    copula = GaussianCopula(seed=1).fit(real)
    synth = copula.sample(4000)
    assert list(synth.columns) == list(real.columns)
    for col in real.columns:
        assert set(synth[col].unique()) <= set(real[col].unique()) or (
            pd.api.types.is_float_dtype(real[col])
        ), col
    for stat in column_stats(real, synth, copula):
        # KS statistic / total variation distance: small for every column
        assert stat["distance"] < 0.06, stat


def test_dependence_between_columns_is_kept() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    frame = pd.DataFrame(
        {
            "x": x,
            "y": np.exp(x + 0.3 * rng.normal(size=5000)),  # monotone in x: rank corr ~0.95
            "c": np.where(x > 0.8, "high", "rest"),
            "noise": rng.integers(0, 100, 5000),
        }
    )
    synth = GaussianCopula(seed=2).fit(frame).sample(5000)
    real_corr = frame[["x", "y", "noise"]].corr(method="spearman")
    synth_corr = synth[["x", "y", "noise"]].corr(method="spearman")
    assert (real_corr - synth_corr).abs().to_numpy().max() < 0.05
    assert synth["noise"].dtype.kind == "i"
    # the categorical column follows x as in the real data
    means = synth.groupby("c")["x"].mean()
    assert means["high"] > 0.5 and means["rest"] < 0
    assert (synth["c"] == "high").mean() == pytest.approx((frame["c"] == "high").mean(), abs=0.02)


@pytest.mark.integration
def test_cli_writes_csv_and_report(real: pd.DataFrame, tmp_path: Path) -> None:
    source = tmp_path / "real.csv"
    real.to_csv(source, index=False)
    out = tmp_path / "synth.csv"
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "synth", "--from", str(source), "--rows", "500",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(out)) == 500
    report = out.with_suffix(".html").read_text()
    assert all(f"<td>{col}</td>" in report for col in real.columns)
    assert report.count("data:image/png;base64,") == len(real.columns)
    bad = subprocess.run(
        [sys.executable, "-m", "server.cli", "synth", "--from", str(tmp_path / "nope.csv"),
         "--rows", "5", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and "pronto synth: error" in bad.stderr
