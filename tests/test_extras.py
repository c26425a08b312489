"""Each install extra works alone: `.[serve]` serves, `.[train]` trains and runs the pipeline.

`make setup` installs every extra into one environment, which hides a module that one extra
imports but only another installs (onnxruntime in the trainer was such a case: the training
workflow and the trainer image install `.[train]` only). These tests build fresh virtual
environments with uv from the pinned constraints, as the Dockerfile and the workflows do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.modelgen import build_repository
from tests.support import free_port, free_port_block, stop_process, wait_for_grpc_health

ROOT = Path(__file__).resolve().parents[1]
UV = Path(sys.executable).with_name("uv")

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _venv(where: Path, extra: str) -> Path:
    """A fresh virtual environment with only ``.[extra]`` (the project built as a wheel)."""
    if not UV.exists():
        pytest.fail(f"uv is missing next to {sys.executable}: run make setup")
    run = [str(UV), "venv", "-q", "-p", sys.executable, str(where)]
    subprocess.run(run, check=True, timeout=120)
    python = where / "bin" / "python"
    install = [str(UV), "pip", "install", "-q", "-p", str(python), "-c", ".ci/constraints.txt"]
    proc = subprocess.run(
        [*install, f".[{extra}]"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return where / "bin"


def _clean_env(bin_dir: Path) -> dict[str, str]:
    # The fresh environment has no bytecode yet: let the first process write what the
    # others import, instead of each compiling the training stack again.
    drop = ("PRONTO_", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def _importable(python: Path, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(python), "-c", code], check=False, timeout=60).returncode == 0


def test_serve_extra_alone_serves(tmp_path: Path) -> None:
    bin_dir = _venv(tmp_path / "venv", "serve")
    # The serving image must not carry the training stack.
    for module in ("sklearn", "skl2onnx", "dvc", "pandas"):
        assert not _importable(bin_dir / "python", module), f"{module} in a serve-only install"
    repo = build_repository(tmp_path / "models")
    port, metrics_port, base = free_port(), free_port(), free_port_block(1)
    cmd = [
        str(bin_dir / "pronto"), "serve", "--model-repository", str(repo), "--workers", "1",
        "--host", "127.0.0.1", "--port", str(port), "--worker-base-port", str(base),
        "--metrics-port", str(metrics_port), "--metrics-dir", str(tmp_path / "metrics"),
    ]  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=_clean_env(bin_dir), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_grpc_health(f"127.0.0.1:{port}", timeout=60, proc=proc)
    except Exception:
        print(log.read_text(), file=sys.stderr)
        raise
    finally:
        stop_process(proc)


def test_train_extra_alone_trains_and_runs_the_pipeline(tmp_path: Path) -> None:
    bin_dir = _venv(tmp_path / "venv", "train")
    env = _clean_env(bin_dir)

    # `pronto train` end to end: data, fit, ONNX export, parity check, publish.
    work = tmp_path / "train"
    work.mkdir()
    proc = subprocess.run(
        [str(bin_dir / "pronto"), "train", "--rows", "3000", "--model-repository", "models"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (work / "models" / "flight-delay" / "1" / "model.onnx").is_file()

    # The DVC pipeline as the training workflow runs it, in a copy of the project.
    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, project / name)
    for package in ("trainer", "pronto_contract"):  # the pipeline's code dependencies
        shutil.copytree(ROOT / package, project / package, ignore=shutil.ignore_patterns("__py*"))
    params = (project / "params.yaml").read_text(encoding="utf-8")
    assert "rows: 68000" in params
    (project / "params.yaml").write_text(params.replace("rows: 68000", "rows: 3000"))
    for cmd in (["git", "init", "-q"], [str(bin_dir / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=project, env=env, check=True, timeout=60)
    proc = subprocess.run(
        [str(bin_dir / "dvc"), "repro"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (project / "build" / "reports" / "metrics.json").is_file()

    # The gate runs in the same environment (no production model yet: it passes).
    proc = subprocess.run(
        [str(bin_dir / "python"), "-m", "trainer", "gate", "--candidate", "build/model",
         "--production", "build/none", "--data", "data/flights.csv", "--out", "build/gate"],
        cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no model in production yet" in proc.stdout
