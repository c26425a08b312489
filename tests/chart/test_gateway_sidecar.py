"""The Envoy sidecar's configuration is what `pronto gateway --render` produces.

The chart never holds a copy of the Envoy template: an init container runs the renderer
from the server image with the chart's PRONTO_* settings. These tests run that renderer
with exactly the environment the pod gets and compare it with a direct
`pronto gateway --render` given the same settings as command-line flags.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.settings import GatewaySettings
from server.settings import ServeSettings
from tests.chart.helm import REPO, container, cpu_quantity, needs_helm, pod_spec, render
from tests.chart.pod import POD_AUTH_DIR, POD_DESCRIPTOR_DIR, POD_ENVOY_DIR, PodFiles, container_env

pytestmark = needs_helm


def _pod_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Environment of the envoy-config init container."""
    renderer = container(pod_spec(objects), "envoy-config")
    assert renderer["args"] == ["gateway", "--render", f"{POD_ENVOY_DIR}/envoy.yaml"]
    return container_env(objects, "envoy-config")


def _run_renderer(args: list[str], env: dict[str, str]) -> None:
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    proc = subprocess.run(
        [sys.executable, "-m", "pronto_cli", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**base, **env},
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def _flags_from_values(values: dict[str, Any], files: PodFiles, workers: str) -> list[str]:
    """`pronto gateway` flags for the chart values, written out independently of the
    chart's templates (the documented meaning of each value)."""
    g = values["gateway"]
    flags = [
        "--listen-address=0.0.0.0",
        f"--listen-port={g['port']}",
        f"--admin-port={g['adminPort']}",
        f"--stats-port={g['statsPort']}",
        f"--workers={workers}",
        f"--worker-base-port={values['server']['workerBasePort']}",
        "--upstream-host=127.0.0.1",
        f"--infer-timeout={g['inferTimeoutSeconds']}",
        f"--retries={g['retries']}",
        f"--rate-limit-rps={g['rateLimit']['rps']}",
        f"--rate-limit-burst={g['rateLimit']['burst']}",
        f"--envoy-log-level={g['logLevel']}",
        # Envoy runs one thread per CPU of its limit, and each thread admits its share
        f"--envoy-concurrency={math.ceil(cpu_quantity(g['resources']['limits']['cpu']))}",
        "--access-log" if g["accessLog"] else "--no-access-log",
    ]
    auth = g["auth"]
    flags.append("--no-require-auth" if auth["mode"] == "none" else "--require-auth")
    if auth["mode"] == "api-key":
        key_file = files.to_local(f"{POD_AUTH_DIR}/{auth['apiKey']['secretKey']}")
        flags += [f"--api-keys-file={key_file}", f"--api-key-header={auth['apiKey']['header']}"]
    elif auth["mode"] == "jwt":
        jwks = files.to_local(f"{POD_AUTH_DIR}/{auth['jwt']['secretKey']}")
        flags += [f"--jwt-jwks-file={jwks}", f"--jwt-issuer={auth['jwt']['issuer']}"]
        if auth["jwt"]["audiences"]:
            flags += ["--jwt-audiences", *auth["jwt"]["audiences"]]
    if g["descriptorSet"]["fromConfigMap"]:
        flags.append(f"--descriptor-set={files.to_local(POD_DESCRIPTOR_DIR + '/pronto.pb')}")
    return flags


def _merged_values(values_file: str) -> dict[str, Any]:
    chart = REPO / "charts" / "pronto"
    merged: dict[str, Any] = yaml.safe_load((chart / "values.yaml").read_text())
    overrides = yaml.safe_load((chart / "ci" / values_file).read_text()) or {}

    def merge(a: dict[str, Any], b: dict[str, Any]) -> None:
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v

    merge(merged, overrides)
    return merged


@pytest.mark.parametrize(
    "values_file", ["default-values.yaml", "jwt-values.yaml", "auth-off-values.yaml"]
)
def test_sidecar_config_equals_direct_render(values_file: str, tmp_path: Path) -> None:
    objects = render((values_file,))
    files = PodFiles(tmp_path, objects)
    env = {k: files.to_local(v) for k, v in _pod_env(objects).items()}

    via_chart = tmp_path / "chart" / "envoy.yaml"
    _run_renderer(["--render", str(via_chart)], env)

    values = _merged_values(values_file)
    direct = tmp_path / "direct" / "envoy.yaml"
    flags = _flags_from_values(values, files, env["PRONTO_WORKERS"])
    _run_renderer(["--render", str(direct), *flags], {})

    chart_text = via_chart.read_text().replace(str(via_chart.parent), POD_ENVOY_DIR)
    direct_text = direct.read_text().replace(str(direct.parent), POD_ENVOY_DIR)
    assert files.to_pod(chart_text) == files.to_pod(direct_text)

    # Every file the sidecar's Envoy opens is mounted into the envoy container.
    config = yaml.safe_load(files.to_pod(chart_text))
    mounts = [m["mountPath"] for m in container(pod_spec(objects), "envoy")["volumeMounts"]]
    for path in _file_references(config):
        assert any(path.startswith(m + "/") for m in mounts), path

    # The rendering really balances over one upstream per worker of the pod.
    workers = int(env["PRONTO_WORKERS"])
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for c in config["static_resources"]["clusters"]
        for ep in c.get("load_assignment", {}).get("endpoints", [])
        for e in ep["lb_endpoints"]
    ]
    base = values["server"]["workerBasePort"]
    assert set(range(base, base + workers)) <= set(ports)


def _file_references(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("filename", "proto_descriptor") and isinstance(value, str):
                found.append(value)
            else:
                found += _file_references(value)
    elif isinstance(node, list):
        for item in node:
            found += _file_references(item)
    return found


def test_sidecar_config_passes_envoy_validation(tmp_path: Path) -> None:
    objects = render(("jwt-values.yaml",))
    files = PodFiles(tmp_path, objects)
    env = {k: files.to_local(v) for k, v in _pod_env(objects).items()}
    target = tmp_path / "envoy" / "envoy.yaml"
    _run_renderer(["--render", str(target)], env)
    _run_renderer(["--render", str(target), "--validate"], env)


@pytest.mark.parametrize("values_file", ["default-values.yaml", "jwt-values.yaml"])
def test_chart_sets_only_known_settings(values_file: str) -> None:
    """Every PRONTO_* variable the chart sets is a field of the settings class that reads it,
    so a renamed setting fails here rather than being ignored in the cluster."""
    serve_fields = {f"PRONTO_{n.upper()}" for n in ServeSettings.model_fields}
    gateway_fields = {f"PRONTO_{n.upper()}" for n in GatewaySettings.model_fields}
    objects = render((values_file,))
    server_env = {e["name"] for e in container(pod_spec(objects), "server")["env"]}
    assert {n for n in server_env if n.startswith("PRONTO_")} <= serve_fields
    assert set(_pod_env(objects)) - {"HOME"} <= gateway_fields
