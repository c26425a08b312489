"""Stand-ins for what the kubelet gives a pod: resolved environment and mounted files."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helm import container, find_all, pod_spec, resolve_cpu_field

__all__ = ["POD_AUTH_DIR", "POD_DESCRIPTOR_DIR", "POD_ENVOY_DIR", "PodFiles", "container_env"]

POD_AUTH_DIR = "/etc/pronto/auth"
POD_DESCRIPTOR_DIR = "/etc/pronto/descriptor"
POD_ENVOY_DIR = "/etc/envoy"
# Downward API fields as a pod simulated on this machine sees them
POD_FIELDS = {"status.podIP": "127.0.0.1"}


def container_env(objects: list[dict[str, Any]], name: str) -> dict[str, str]:
    """Environment of container ``name``, resolved as the kubelet would (ConfigMap envFrom,
    literal values, Downward API CPU limits)."""
    spec = pod_spec(objects)
    target = container(spec, name)
    configmaps = {c["metadata"]["name"]: c for c in find_all(objects, "ConfigMap")}
    env: dict[str, str] = {}
    for source in target.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for var in target.get("env", []):
        if "value" in var:
            # $(NAME) refers to a variable defined earlier in the list, as in Kubernetes
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), var["value"])
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = POD_FIELDS[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[var["name"]] = resolve_cpu_field(spec, var["valueFrom"]["resourceFieldRef"])
    return env


def _jwks() -> str:
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    numbers = public.public_numbers()

    def b64(n: int) -> str:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    key = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "t"}
    key |= {"n": b64(numbers.n), "e": b64(numbers.e)}
    return json.dumps({"keys": [key]})


class PodFiles:
    """The pod's mounted files (auth secret, descriptor ConfigMap, rendered Envoy config)
    under a temporary directory, with path translation both ways."""

    API_KEY = "k3y-for-tests"

    def __init__(self, root: Path, objects: list[dict[str, Any]]) -> None:
        self.map = {
            POD_AUTH_DIR: root / "auth",
            POD_DESCRIPTOR_DIR: root / "descriptor",
            POD_ENVOY_DIR: root / "envoy",
        }
        for path in self.map.values():
            path.mkdir(parents=True)
        auth = self.map[POD_AUTH_DIR]
        (auth / "api-keys").write_text(f"ci:{self.API_KEY}\nops:another-key\n")
        jwt = any(
            "PRONTO_JWT_JWKS_FILE" in c.get("data", {}) for c in find_all(objects, "ConfigMap")
        )
        (auth / "jwks.json").write_text(_jwks() if jwt else "")
        for cm in find_all(objects, "ConfigMap"):
            for name, data in cm.get("binaryData", {}).items():
                (self.map[POD_DESCRIPTOR_DIR] / name).write_bytes(base64.b64decode(data))

    def to_local(self, value: str) -> str:
        for pod, local in self.map.items():
            value = value.replace(pod, str(local))
        return value

    def to_pod(self, text: str) -> str:
        for pod, local in self.map.items():
            text = text.replace(str(local), pod)
        return text
