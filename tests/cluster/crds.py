"""CustomResourceDefinitions the chart's value sets ask for, from their published modules.

Each value set names the API versions it needs in its header (``--api-versions ...``). A CRD
is created only from its upstream release, pinned in ``go/crds`` and verified by ``go.sum``;
one with no published source here is reported, never hand-written.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from pathlib import Path

__all__ = ["ADAPTER_APIS", "UNPUBLISHED", "crd_files", "needed_api_versions"]

CRD_MODULE = Path(__file__).resolve().parent / "go" / "crds"
_PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator"
_GATEWAY_API = "sigs.k8s.io/gateway-api"

# api-version/Kind -> (module, files in the module) whose CRDs serve it.
SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "monitoring.coreos.com/v1/ServiceMonitor": (
        _PROMETHEUS_OPERATOR,
        ("example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",),
    ),
    "monitoring.coreos.com/v1/PrometheusRule": (
        _PROMETHEUS_OPERATOR,
        ("example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",),
    ),
    # The chart renders a Gateway next to the HTTPRoute.
    "gateway.networking.k8s.io/v1/HTTPRoute": (
        _GATEWAY_API,
        (
            "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml",
            "config/crd/standard/gateway.networking.k8s.io_gateways.yaml",
        ),
    ),
}

UNPUBLISHED: dict[str, str] = {
    "monitoring.googleapis.com/v1/PodMonitoring": (
        "GKE Managed Prometheus CRDs (GoogleCloudPlatform/prometheus-engine) are not served by "
        "the Go module proxy or any package index reachable here"
    ),
    "monitoring.googleapis.com/v1/Rules": (
        "GKE Managed Prometheus CRDs (GoogleCloudPlatform/prometheus-engine) are not served by "
        "the Go module proxy or any package index reachable here"
    ),
    "networking.gke.io/v1/HealthCheckPolicy": (
        "GKE installs networking.gke.io/v1 HealthCheckPolicy itself; its CRD is not published "
        "as a Go module or package"
    ),
    "networking.gke.io/v1/GCPBackendPolicy": (
        "GKE installs networking.gke.io/v1 GCPBackendPolicy itself; its CRD is not published "
        "as a Go module or package"
    ),
}

# API versions a value set is rendered with whose objects the API server takes without them:
# the HPA's `Pods` metric is plain autoscaling/v2, and the adapter (an aggregated API server
# such as the Stackdriver adapter) only answers the HPA controller's metric queries.
ADAPTER_APIS: dict[str, str] = {
    "custom.metrics.k8s.io/v1beta2": "served by a custom-metrics adapter, not by a CRD",
}

_API_VERSION = re.compile(r"--api-versions\s+(\S+)")


def needed_api_versions(values_file: Path) -> list[str]:
    """API versions a value set's header says it must be rendered with."""
    return _API_VERSION.findall(values_file.read_text())


@functools.cache
def _module_dir(module: str) -> Path:
    proc = subprocess.run(
        ["go", "mod", "download", "-json", module],
        cwd=CRD_MODULE,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
        env={**os.environ, "GOFLAGS": "-mod=readonly"},
    )
    return Path(json.loads(proc.stdout)["Dir"])


def crd_files(api_version: str) -> list[Path]:
    module, files = SOURCES[api_version]
    root = _module_dir(module)
    return [root / f for f in files]
