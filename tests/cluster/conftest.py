"""One control plane for the whole session, and helm/kubectl bound to it."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helm import CHART, REPO, helm_binary
from tests.cluster.controlplane import ControlPlane, binaries, running

HERE = Path(__file__).resolve().parent


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries (first run only, minutes) before any test's timeout starts."""
    if any(HERE in Path(item.path).parents for item in session.items):
        binaries()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver and kube-controller-manager on loopback, stopped at session end
    (also when tests fail or the run is interrupted)."""
    with running(tmp_path_factory.mktemp("controlplane")) as plane:
        yield plane


@dataclass
class Cluster:
    """helm and kubectl against the control plane, as the admin or as another user."""

    plane: ControlPlane
    home: Path

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        return self.plane.kubectl(*args, check=check, input=input)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(
            self.kubectl("get", kind, name, "-n", namespace, "-o", "json")
        )
        return obj

    def items(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[dict[str, Any]] = json.loads(self.kubectl(*args))["items"]
        return items

    def namespace(self, prefix: str, labels: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.kubectl("create", "namespace", name)
        if labels:
            self.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()))
        return name

    def helm(
        self, *args: str, as_user: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        helm = helm_binary()
        assert helm, "helm is not installed (make setup puts it in .tools/bin)"
        argv = [helm, "--kubeconfig", str(self.plane.kubeconfig), *args]
        if as_user:
            argv += ["--kube-as-user", as_user]
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "KUBECACHEDIR": str(self.home / "kube-cache"),
        }
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
        return proc


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return Cluster(control_plane, tmp_path_factory.mktemp("helm-home"))


__all__ = ["CHART", "Cluster"]
