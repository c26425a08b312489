"""Security checks: no credential reaches a log, auth is on in the chart by default, and
the installed dependencies carry no known vulnerability."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from datetime import date
from pathlib import Path

import pytest

from tests.reliability.client import send
from tests.reliability.conftest import API_KEY, SecuredStack
from tests.reliability.corpus import CASES, REST_PREDICT, Case, good_rest_predict
from tests.tools import needs_tool

ROOT = Path(__file__).resolve().parents[2]

#: vulnerability id -> (date decided, why it does not apply). Empty: nothing is ignored.
PIP_AUDIT_IGNORED: dict[str, tuple[date, str]] = {}


@pytest.mark.integration
def test_no_secret_or_token_is_logged(secured: SecuredStack) -> None:
    token = secured.token()
    wrong_key, forged = "k-never-log-this-7d3a", token[:-8] + "AAAAAAAA"
    sent = [
        Case("key", "rest", f"POST {REST_PREDICT}", good_rest_predict(), 200),
        Case("jwt", "rest", f"POST {REST_PREDICT}", good_rest_predict(), 200,
             {"authorization": f"Bearer {token}"}),
        Case("wrong-key", "rest", f"POST {REST_PREDICT}", good_rest_predict(), 401,
             {"x-api-key": wrong_key}),
        Case("forged-jwt", "rest", f"POST {REST_PREDICT}", good_rest_predict(), 401,
             {"authorization": f"Bearer {forged}"}),
    ]  # fmt: skip
    # failing requests too: error paths are where headers tend to get dumped
    bad = [c for c in CASES if c.headers == {"auth": "key"} and not c.bug][:10]
    for case in (
        sent
        + bad
        + [
            Case(c.id, c.protocol, c.target, c.body, c.expect, {"authorization": f"Bearer {token}"})
            for c in bad
        ]
    ):
        send(secured, case)
    assert [send(secured, c) for c in sent] == [200, 200, 401, 401]
    logs = {path.name: path.read_text(errors="replace") for path in secured.logs}
    assert all(logs.values()), "the server and Envoy should have logged something"
    secrets = {"api key": API_KEY, "jwt": token, "wrong key": wrong_key, "forged jwt": forged}
    # a JWT's signature is the part that must never leak; the header alone is public
    secrets |= {"jwt signature": token.rsplit(".", 1)[1]}
    for name, text in logs.items():
        for what, secret in secrets.items():
            assert secret not in text, f"{what} appears in {name}"


@needs_tool((ROOT / ".tools" / "bin" / "helm").is_file(), "helm is not installed (make setup)")
def test_chart_requires_auth_by_default() -> None:
    from tests.chart.helm import find_all, render

    objects = render(values_files=())
    maps = find_all(objects, "ConfigMap")
    config = next(o["data"] for o in maps if o["metadata"]["name"].endswith("-gateway"))
    assert config["PRONTO_REQUIRE_AUTH"] == "true"
    assert config.get("PRONTO_API_KEYS_FILE") or config.get("PRONTO_JWT_JWKS_FILE")


@needs_tool((ROOT / ".tools" / "bin" / "helm").is_file(), "helm is not installed (make setup)")
def test_chart_binds_no_server_port_on_every_interface() -> None:
    from tests.chart.helm import container, pod_spec, render
    from tests.chart.pod import container_env

    objects = render(values_files=())
    env = container_env(objects, "server")
    server = container(pod_spec(objects), "server")
    pod_ip = next(v for v in server["env"] if v["name"] == "POD_IP")
    assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    # the unauthenticated worker ports serve the Envoy sidecar only; probes and the
    # scraper reach the shared port and /metrics on the pod IP
    assert env["PRONTO_WORKER_HOST"] == "127.0.0.1"
    assert env["PRONTO_HOST"] == env["PRONTO_METRICS_HOST"] == env["POD_IP"]


def _vulnerability_service_reachable() -> bool:
    """pip-audit asks PyPI's per-release JSON API; some mirrors and proxies serve only the
    per-project page, and then pip-audit reports every package as "not found"."""
    url = "https://pypi.org/pypi/pip-audit/2.10.1/json"
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return bool(reply.status == 200 and "vulnerabilities" in json.load(reply))
    except OSError:
        return False


@pytest.mark.skipif(
    not _vulnerability_service_reachable(),
    reason="PyPI vulnerability data unreachable from here; runs where PyPI is (CI)",
)
def test_dependencies_have_no_known_vulnerabilities() -> None:
    cmd = [sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "-f", "json"]
    cmd += ["--skip-editable"]
    for vuln in PIP_AUDIT_IGNORED:
        cmd += ["--ignore-vuln", vuln]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    report = json.loads(proc.stdout)
    found = {
        f"{d['name']} {d['version']}": [v["id"] for v in d.get("vulns", [])]
        for d in report["dependencies"]
        if d.get("vulns")
    }
    assert not found, found
    audited = [d for d in report["dependencies"] if "skip_reason" not in d]
    assert len(audited) > len(report["dependencies"]) / 2, "most packages could not be audited"
