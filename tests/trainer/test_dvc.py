"""``dvc repro`` and a ``dvc push``/``dvc pull`` round trip in a throw-away clone.

The pipeline files are copied into a fresh git repository under ``tmp_path`` with a smaller data
set; the committed default remote (``../pronto-dvc-remote`` relative to the repository) then
resolves inside ``tmp_path`` too, so the main checkout's cache, lock file and remote are untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tools import needs_tool

ROOT = Path(__file__).resolve().parents[2]
DVC = Path(sys.executable).with_name("dvc")
OUTPUTS = [
    "data/flights.csv",
    "build/model/model.onnx",
    "build/model/model.json",
    "build/reports/metrics.json",
    "build/reports/report.md",
    "build/reports/plots/roc.png",
]

pytestmark = [
    pytest.mark.slow,
    needs_tool(DVC.exists(), "dvc is not installed next to this Python (make setup)"),
]


def _run(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRONTO_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    proc = subprocess.run(
        args, cwd=repo, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _clone(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for package in ("trainer", "pronto_contract"):  # the pipeline's code dependencies
        shutil.copytree(
            ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    (repo / ".dvc").mkdir()
    for name in ["dvc.yaml", ".dvcignore", ".gitignore", ".dvc/config", ".dvc/.gitignore"]:
        shutil.copy(ROOT / name, repo / name)
    params = (ROOT / "params.yaml").read_text()
    assert "rows: 68000" in params
    (repo / "params.yaml").write_text(params.replace("rows: 68000", "rows: 3000"))
    _run(repo, "git", "init", "-q")
    _run(repo, "git", "add", ".")
    _run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "x")
    return repo


def _digests(repo: Path) -> dict[str, str]:
    return {p: hashlib.sha256((repo / p).read_bytes()).hexdigest() for p in OUTPUTS}


def test_repro_then_push_and_pull_round_trip(tmp_path: Path) -> None:
    repo = _clone(tmp_path)
    out = _run(repo, str(DVC), "repro")
    for stage in ("generate", "train", "evaluate"):
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((repo / "build/reports/metrics.json").read_text())
    assert metrics["rows"] == 600 and metrics["roc_auc"] > 0.5
    # The evaluate stage rebuilt the same test split the train stage scored.
    assert metrics == json.loads((repo / "build/model/metrics.json").read_text())
    before = _digests(repo)

    _run(repo, str(DVC), "push")
    remote = tmp_path / "pronto-dvc-remote"  # the committed default, resolved in the clone
    assert any(p.is_file() for p in remote.rglob("*"))

    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "build")
    (repo / "data" / "flights.csv").unlink()
    _run(repo, str(DVC), "pull")
    assert _digests(repo) == before
    # Pulled outputs match the lock file: nothing would be re-run.
    assert json.loads(_run(repo, str(DVC), "status", "--json")) == {}
