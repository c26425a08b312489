"""The training gate: a candidate is published only when it is no worse than production."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.gate import GateParams, compare, load_params
from trainer.settings import TrainSettings
from trainer.train import train

ROOT = Path(__file__).resolve().parents[2]


def _quiet(_: str) -> None:
    pass


@pytest.mark.parametrize(
    ("metric", "candidate", "production", "passed"),
    [
        ("roc_auc", 0.80, 0.80, True),
        ("roc_auc", 0.796, 0.80, True),  # within the tolerance
        ("roc_auc", 0.794, 0.80, False),
        ("roc_auc", 0.90, 0.80, True),
        ("log_loss", 0.404, 0.40, True),  # lower is better
        ("log_loss", 0.406, 0.40, False),
        ("brier", 0.10, 0.20, True),
    ],
)
def test_compare_respects_direction_and_tolerance(
    metric: str, candidate: float, production: float, passed: bool
) -> None:
    verdict = compare(GateParams(metric, 0.005), candidate, production)
    assert verdict.passed is passed, verdict.reason


def test_first_model_passes_and_bad_params_are_refused(tmp_path: Path) -> None:
    assert compare(GateParams("roc_auc", 0.0), 0.5, None).passed
    with pytest.raises(ValueError, match=r"gate\.metric"):
        GateParams("rows", 0.0)
    with pytest.raises(ValueError, match=r"gate\.tolerance"):
        GateParams("roc_auc", -0.1)
    missing = tmp_path / "params.yaml"
    missing.write_text("train: {seed: 1}\n")
    with pytest.raises(ValueError, match="gate:"):
        load_params(missing)


def test_project_params_define_the_gate() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.metric == "roc_auc" and params.tolerance <= 0.01


def test_gate_cli_compares_on_the_same_rows(flights_csv: Path, tmp_path: Path) -> None:
    """A starved model cannot replace a good one; the good one may replace the starved one."""
    good = tmp_path / "good"
    poor = tmp_path / "poor"
    train(TrainSettings(data=flights_csv, output_dir=good), log=_quiet)
    train(TrainSettings(data=flights_csv, output_dir=poor, lr_c=1e-5), log=_quiet)
    params = tmp_path / "params.yaml"
    params.write_text("gate:\n  metric: roc_auc\n  tolerance: 0.001\n")

    def gate(candidate: Path, production: Path) -> tuple[int, dict[str, object], str]:
        out = tmp_path / f"gate-{candidate.name}"
        proc = subprocess.run(
            [sys.executable, "-m", "trainer", "gate", "--candidate", str(candidate),
             "--production", str(production), "--data", str(flights_csv),
             "--params", str(params), "--out", str(out)],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode in (0, 1), proc.stdout + proc.stderr
        verdict = json.loads((out / "gate.json").read_text())
        return proc.returncode, verdict, (out / "gate.md").read_text()

    code, verdict, report = gate(poor, good)
    assert code == 1 and verdict["passed"] is False
    assert isinstance(verdict["production"], float)
    assert isinstance(verdict["candidate"], float)
    assert verdict["candidate"] < verdict["production"]
    assert "**FAIL**" in report and "| roc_auc (gate) |" in report

    code, verdict, report = gate(good, poor)
    assert code == 0 and verdict["passed"] is True and "**PASS**" in report
