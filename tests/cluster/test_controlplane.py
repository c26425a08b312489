"""The control plane's own lifecycle: nothing outlives its owner."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.chart.helm import REPO

pytestmark = pytest.mark.integration

OWNER = """
import pathlib, sys, time
from tests.cluster.controlplane import running
with running(pathlib.Path(sys.argv[1])) as plane:
    print(" ".join(str(p.pid) for p in plane.processes.values()), flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids: list[int], timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_processes_die_with_a_killed_owner(tmp_path: Path) -> None:
    """SIGKILL of the test process (no teardown, no atexit) still stops etcd, the API server
    and the controller manager."""
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path / "cp")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == 3, owner.stderr.read() if owner.stderr else ""
        assert all(_alive(p) for p in pids)
    finally:
        owner.kill()
        owner.wait()
    left = _wait_gone(pids)
    for pid in left:  # do not leak them into the rest of the run when this fails
        psutil.Process(pid).kill()
    assert left == []


def test_start_and_stop_commands(tmp_path: Path) -> None:
    """`controlplane.py start` leaves a running control plane behind; `stop` ends it."""
    workdir = tmp_path / "cp"
    command = [sys.executable, "-m", "tests.cluster.controlplane"]
    try:
        started = subprocess.run(
            [*command, "start", "--dir", str(workdir)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=240,
            check=True,
        )
        assert Path(started.stdout.strip()) == workdir / "kubeconfig"
        pids = [int((workdir / f"{n}.pid").read_text()) for n in ("etcd", "kube-apiserver")]
        pids.append(int((workdir / "kube-controller-manager.pid").read_text()))
        assert all(_alive(p) for p in pids)
    finally:
        subprocess.run([*command, "stop", "--dir", str(workdir)], cwd=REPO, timeout=120, check=True)
    assert _wait_gone(pids, timeout=5) == []
    assert not list(workdir.glob("*.pid"))
