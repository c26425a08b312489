"""Render the chart with ``helm template`` and look things up in the result."""

from __future__ import annotations

import functools
import math
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.tools import needs_tool

__all__ = [
    "CHART",
    "KUBE_VERSION",
    "REPO",
    "SCENARIOS",
    "Scenario",
    "container",
    "cpu_quantity",
    "find",
    "find_all",
    "helm_binary",
    "needs_helm",
    "pod_spec",
    "render",
    "render_scenario",
    "resolve_cpu_field",
    "run_helm",
]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "pronto"
KUBE_VERSION = "1.30.0"


@dataclass(frozen=True)
class Scenario:
    """One value combination the chart must render and validate under."""

    name: str
    values_file: str
    api_versions: tuple[str, ...] = ()
    sets: tuple[str, ...] = field(default_factory=tuple)


SCENARIOS = (
    Scenario("defaults", "default-values.yaml"),
    Scenario(
        "monitoring-gmp",
        "monitoring-gmp-values.yaml",
        ("monitoring.googleapis.com/v1/PodMonitoring", "monitoring.googleapis.com/v1/Rules"),
    ),
    Scenario(
        "monitoring-operator",
        "monitoring-operator-values.yaml",
        ("monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule"),
    ),
    Scenario(
        "gateway",
        "gateway-values.yaml",
        (
            "gateway.networking.k8s.io/v1/HTTPRoute",
            "networking.gke.io/v1/HealthCheckPolicy",
            "networking.gke.io/v1/GCPBackendPolicy",
        ),
    ),
    Scenario("auth-off", "auth-off-values.yaml"),
    Scenario("baked-model", "baked-model-values.yaml"),
    Scenario("jwt", "jwt-values.yaml"),
    Scenario("custom-metrics", "custom-metrics-values.yaml", ("custom.metrics.k8s.io/v1beta2",)),
    Scenario("rollout", "rollout-values.yaml"),
    Scenario("multi-model", "multi-model-values.yaml"),
    Scenario("tracing", "tracing-values.yaml"),
)


def helm_binary() -> str | None:
    local = REPO / ".tools" / "bin" / "helm"
    if local.is_file():
        return str(local)
    return shutil.which("helm")


needs_helm = needs_tool(
    helm_binary() is not None, "helm is not installed (make setup puts it in .tools/bin)"
)


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    helm = helm_binary()
    if helm is None:
        raise FileNotFoundError("helm")
    return subprocess.run(
        [helm, *args], capture_output=True, text=True, check=False, timeout=120, cwd=REPO
    )


@functools.cache
def _render_text(
    values_files: tuple[str, ...], sets: tuple[str, ...], api_versions: tuple[str, ...]
) -> str:
    args = ["template", "pronto", str(CHART), "--namespace", "pronto"]
    args += ["--kube-version", KUBE_VERSION]
    for f in values_files:
        args += ["--values", str(CHART / "ci" / f)]
    for s in sets:
        args += ["--set", s]
    for a in api_versions:
        args += ["--api-versions", a]
    proc = run_helm(*args)
    if proc.returncode != 0:
        raise AssertionError(f"helm template failed:\n{proc.stderr}")
    return proc.stdout


def render(
    values_files: Iterable[str] = ("default-values.yaml",),
    sets: Iterable[str] = (),
    api_versions: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Objects rendered by ``helm template`` (a fresh copy: callers may mutate it)."""
    text = _render_text(tuple(values_files), tuple(sets), tuple(api_versions))
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_scenario(scenario: Scenario) -> list[dict[str, Any]]:
    return render((scenario.values_file,), scenario.sets, scenario.api_versions)


def find_all(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def find(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The release's one object of ``kind``; the optional tracing collector's objects
    (component otel-collector) and the `helm test` hooks are left out: look them up by name
    or by their hook annotation."""
    matches = [
        o
        for o in find_all(objects, kind)
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "otel-collector"
        and o["metadata"].get("annotations", {}).get("helm.sh/hook") != "test"
    ]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = find(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        if c["name"] == name:
            return dict(c)
    raise KeyError(name)


_QUANTITY = re.compile(r"^(?P<num>[0-9]+(?:\.[0-9]+)?)(?P<unit>m?)$")


def cpu_quantity(value: str | int | float) -> float:
    """CPUs in a Kubernetes CPU quantity ("2", "1500m", 0.5)."""
    m = _QUANTITY.match(str(value))
    assert m, f"not a CPU quantity: {value!r}"
    number = float(m["num"])
    return number / 1000 if m["unit"] == "m" else number


def resolve_cpu_field(spec: dict[str, Any], ref: dict[str, Any]) -> str:
    """What the kubelet puts in an env var with a resourceFieldRef on limits.cpu."""
    assert ref["resource"] == "limits.cpu"
    limit = cpu_quantity(container(spec, ref["containerName"])["resources"]["limits"]["cpu"])
    divisor = cpu_quantity(ref.get("divisor", "1"))
    return str(math.ceil(limit / divisor))
